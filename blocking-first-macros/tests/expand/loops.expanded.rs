async fn poll_jobs(queue: Queue) -> usize {
    ::blocking_first::__private::drive(
            ::core::option::Option::None,
            move |__bf: ::blocking_first::__private::Mode| {
                ::blocking_first::__private::body_must_be_send(async move {
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let __ret: usize = {
                        let mut done = 0;
                        {
                            let __value = 'jobs: while let Some(job) = {
                                #[allow(unreachable_code)] __bf.leave_io().await;
                                queue.next_blocking()
                            } {
                                #[allow(unreachable_code)] __bf.leave_io().await;
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
