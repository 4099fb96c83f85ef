static DB: Limit = Limit::new("db", 4);
async fn report(id: u32) -> impl IntoResponse {
    fn body_must_be_send<F>(body: F) -> bf::__private::Body<F::Output>
    where
        F: ::core::future::Future + ::core::marker::Send + 'static,
        F::Output: ::core::marker::Send + 'static,
    {
        bf::__private::Body::new(::std::boxed::Box::pin(body))
    }
    static __BLOCKING_FIRST_SITE: bf::__private::Site = bf::__private::Site::new(
        ::core::concat!(::core::module_path!(), "::", "report"),
        ::core::file!(),
        ::core::line!(),
    );
    bf::__private::drive(
            &__BLOCKING_FIRST_SITE,
            ::core::option::Option::Some(&DB),
            move |__bf: bf::__private::Mode| {
                body_must_be_send(async move {
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let __ret: _ = {
                        let rows = load(id);
                        {
                            __bf.enter_io().await;
                            notify(&rows).await;
                            render(rows)
                        }
                    };
                    #[allow(unreachable_code, clippy::needless_return)] return __ret;
                })
            },
        )
        .await
}
struct Service;
impl Service {
    async fn refresh(self: Arc<Self>) {
        fn body_must_be_send<F>(body: F) -> ::blocking_first::__private::Body<F::Output>
        where
            F: ::core::future::Future + ::core::marker::Send + 'static,
            F::Output: ::core::marker::Send + 'static,
        {
            ::blocking_first::__private::Body::new(::std::boxed::Box::pin(body))
        }
        static __BLOCKING_FIRST_SITE: ::blocking_first::__private::Site = ::blocking_first::__private::Site::new(
            ::core::concat!(::core::module_path!(), "::", "refresh"),
            ::core::file!(),
            ::core::line!(),
        );
        ::blocking_first::__private::drive(
                &__BLOCKING_FIRST_SITE,
                ::core::option::Option::None,
                move |__bf: ::blocking_first::__private::Mode| {
                    body_must_be_send(async move {
                        #[allow(
                            clippy::diverging_sub_expression,
                            clippy::let_unit_value
                        )]
                        let __ret: () = {
                            self.reload();
                        };
                        #[allow(unreachable_code, clippy::needless_return)] return __ret;
                    })
                },
            )
            .await
    }
}
