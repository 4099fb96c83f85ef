// A user's own locals named like the generated ones keep working (hygiene).
use blocking_first::blocking_first;

#[blocking_first]
async fn handler(__bf: u32, __ret: u32) -> u32 {
    let __value = io! { __bf + 1 };
    let (__scope, __branch0) = parallel! { __value, __ret };
    __scope + __branch0
}

fn main() {
    let _ = handler(1, 2);
}
