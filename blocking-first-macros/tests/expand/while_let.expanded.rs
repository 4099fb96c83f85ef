async fn drain(jobs: Arc<Mutex<Vec<Job>>>, mut stop: watch::Receiver<()>) -> usize {
    fn body_must_be_send<F>(body: F) -> ::blocking_first::__private::Body<F::Output>
    where
        F: ::core::future::Future + ::core::marker::Send + 'static,
        F::Output: ::core::marker::Send + 'static,
    {
        ::blocking_first::__private::Body::new(::std::boxed::Box::pin(body))
    }
    static __BLOCKING_FIRST_SITE: ::blocking_first::__private::Site = ::blocking_first::__private::Site::new(
        ::core::concat!(::core::module_path!(), "::", "drain"),
        ::core::file!(),
        ::core::line!(),
    );
    ::blocking_first::__private::drive(
            &__BLOCKING_FIRST_SITE,
            ::core::option::Option::None,
            move |__bf: ::blocking_first::__private::Mode| {
                body_must_be_send(async move {
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let __ret: usize = {
                        let mut sent = 0;
                        {
                            let __value = loop {
                                #[allow(unreachable_code)] __bf.leave_io().await;
                                #[allow(clippy::redundant_else)]
                                if let Some(job) = jobs.lock().await.pop() {
                                    {
                                        __bf.enter_io().await;
                                        let __value = tokio::select! {
                                            ok = job.send() => if ! ok { continue }, _ = stop.changed()
                                            => break,
                                        };
                                        #[allow(unreachable_code)] __bf.leave_io().await;
                                        __value
                                    };
                                    sent += 1;
                                } else {
                                    break
                                }
                            };
                            #[allow(unreachable_code)] __bf.leave_io().await;
                            __value
                        }
                        sent
                    };
                    #[allow(unreachable_code, clippy::needless_return)] return __ret;
                })
            },
        )
        .await
}
