use axum::extract::{Path, State};
use axum::Json;

#[blocking_first]
async fn show(State(db): State<Db>, Path(id): Path<i64>) -> Result<Json<Page>, AppError> {
    let note = db.get()?.load_note(id)?;
    if note.hidden {
        return Err(AppError::NotFound);
    }
    let preview = io! {
        http.get(&note.url).send().await?.text().await?
    };
    let (tags, links) = parallel! {
        db.tags(id),
        db.links(&note),
    };
    Ok(Json(Page::new(note, preview, tags?, links?)))
}
