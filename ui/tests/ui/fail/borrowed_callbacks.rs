// A closure argument that is itself borrowed, or that may hold a borrow, is still rejected: once,
// at the borrow, not again for the references in its parameters.
use blocking_first::blocking_first;

#[blocking_first]
async fn borrowed_closure(len: &dyn Fn(&str) -> usize) -> usize {
    len("abc")
}

#[blocking_first]
async fn closure_holding_a_borrow(len: Box<dyn Fn(&str) -> usize + Send + '_>) -> usize {
    len("abc")
}

fn main() {}
