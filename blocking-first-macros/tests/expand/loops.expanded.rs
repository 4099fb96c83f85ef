async fn poll_jobs(queue: Queue) -> usize {
    fn body_must_be_send<F>(body: F) -> ::blocking_first::__private::Body<F::Output>
    where
        F: ::core::future::Future + ::core::marker::Send + 'static,
        F::Output: ::core::marker::Send + 'static,
    {
        ::blocking_first::__private::Body::new(::std::boxed::Box::pin(body))
    }
    static __BLOCKING_FIRST_SITE: ::blocking_first::__private::Site = ::blocking_first::__private::Site::new(
        ::core::concat!(::core::module_path!(), "::", "poll_jobs"),
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
                        let mut done = 0;
                        {
                            let __value = 'jobs: loop {
                                #[allow(unreachable_code)] __bf.leave_io().await;
                                #[allow(clippy::redundant_else)]
                                if let Some(job) = queue.next_blocking() {
                                    {
                                        __bf.enter_io().await;
                                        if !job.remote_ok().await {
                                            {
                                                #[allow(unreachable_code)] __bf.leave_io().await;
                                                continue 'jobs;
                                            };
                                        }
                                        #[allow(unreachable_code)] __bf.leave_io().await;
                                        if job.is_last() {
                                            {
                                                #[allow(unreachable_code)] __bf.leave_io().await;
                                                break;
                                            };
                                        }
                                    };
                                    job.finish();
                                    done += 1;
                                } else {
                                    break
                                }
                            };
                            #[allow(unreachable_code)] __bf.leave_io().await;
                            __value
                        }
                        done
                    };
                    #[allow(unreachable_code, clippy::needless_return)] return __ret;
                })
            },
        )
        .await
}
