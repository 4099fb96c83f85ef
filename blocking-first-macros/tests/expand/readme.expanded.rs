async fn report(id: u32) -> String {
    ::blocking_first::__private::drive(
            ::core::option::Option::None,
            move |__bf: ::blocking_first::__private::Mode| {
                ::blocking_first::__private::body_must_be_send(async move {
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let __ret: String = {
                        let rows = load(id);
                        let sent = {
                            __bf.enter_io().await;
                            let __value = notify(&rows).await;
                            #[allow(unreachable_code)] __bf.leave_io().await;
                            __value
                        };
                        render(rows, sent)
                    };
                    #[allow(unreachable_code, clippy::needless_return)] return __ret;
                })
            },
        )
        .await
}
