use axum::extract::{Path, State};
use axum::Json;
async fn show(
    State(db): State<Db>,
    Path(id): Path<i64>,
) -> Result<Json<Page>, AppError> {
    fn body_must_be_send<F>(body: F) -> ::blocking_first::__private::Body<F::Output>
    where
        F: ::core::future::Future + ::core::marker::Send + 'static,
        F::Output: ::core::marker::Send + 'static,
    {
        ::blocking_first::__private::Body::new(::std::boxed::Box::pin(body))
    }
    static __BLOCKING_FIRST_SITE: ::blocking_first::__private::Site = ::blocking_first::__private::Site::new(
        ::core::concat!(::core::module_path!(), "::", "show"),
        ::core::file!(),
        ::core::line!(),
    );
    ::blocking_first::__private::drive(
            &__BLOCKING_FIRST_SITE,
            ::core::option::Option::None,
            move |__bf: ::blocking_first::__private::Mode| {
                body_must_be_send(async move {
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let __ret: Result<Json<Page>, AppError> = {
                        let note = db.get()?.load_note(id)?;
                        if note.hidden {
                            return {
                                let __ret: Result<Json<Page>, AppError> = Err(
                                    AppError::NotFound,
                                );
                                __ret
                            };
                        }
                        let preview = {
                            __bf.enter_io().await;
                            let __value = http
                                .get(&note.url)
                                .send()
                                .await?
                                .text()
                                .await?;
                            #[allow(unreachable_code)] __bf.leave_io().await;
                            __value
                        };
                        let (tags, links) = {
                            let __branch0 = || db.tags(id);
                            let __branch1 = || db.links(&note);
                            ::blocking_first::__private::parallel::scope(|__scope| {
                                let __branch0 = __scope.spawn(__branch0);
                                let __branch1 = ::blocking_first::__private::parallel::run_inline(
                                    __branch1,
                                );
                                (__branch0.join(), __branch1)
                            })
                        };
                        Ok(Json(Page::new(note, preview, tags?, links?)))
                    };
                    #[allow(unreachable_code, clippy::needless_return)] return __ret;
                })
            },
        )
        .await
}
