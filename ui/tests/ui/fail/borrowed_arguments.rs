use blocking_first::blocking_first;

#[blocking_first]
async fn by_reference(name: &str, names: Vec<&'static str>) -> usize {
    name.len() + names.len()
}

#[blocking_first]
async fn with_lifetime<'a>(name: std::borrow::Cow<'a, str>) -> usize {
    name.len()
}

struct Service;

impl Service {
    #[blocking_first]
    async fn method(&self) -> u32 {
        1
    }
}

fn main() {}
