// Every loop form and labeled blocks with an `io!` region inside: the annotated body makes and
// drops its temporaries in the same order as the same body without the attribute. Run by
// `src/lib.rs` as a doc test under edition 2021 and under edition 2024, which drop a block's
// tail temporaries at different points.
use std::future::Future;
use std::sync::Mutex;

use blocking_first::blocking_first;

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn log(event: impl Into<String>) {
    LOG.lock().unwrap().push(event.into());
}

/// A temporary that logs when it is made and when it is dropped.
struct Guard(&'static str);

fn guard(name: &'static str) -> Guard {
    log(format!("make {name}"));
    Guard(name)
}

impl Drop for Guard {
    fn drop(&mut self) {
        log(format!("drop {}", self.0));
    }
}

impl Guard {
    fn pop(&self, items: &mut Vec<u32>) -> Option<u32> {
        items.pop()
    }

    fn pass<T>(&self, value: T) -> T {
        value
    }

    fn items(&self) -> std::vec::IntoIter<u32> {
        vec![1, 2].into_iter()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

async fn wait() {
    tokio::task::yield_now().await;
}

/// Blocking code: `Handle::block_on` panics on a runtime worker.
fn blocking(event: &str) {
    tokio::runtime::Handle::current().block_on(async {});
    log(event);
}

fn next_blocking(items: &mut Vec<u32>) -> Option<u32> {
    blocking("condition");
    items.pop()
}

// In a function without the attribute, `io!` is an ordinary block.
macro_rules! io {
    ($($body:tt)*) => {{ $($body)* }};
}

/// The same body twice: `plain` without the attribute, `annotated` with it.
macro_rules! scenario {
    ($name:ident { $($body:tt)* }) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            pub async fn plain() {
                $($body)*
            }

            #[blocking_first]
            pub async fn annotated() {
                $($body)*
            }
        }
    };
}

async fn record(body: impl Future<Output = ()>) -> Vec<String> {
    LOG.lock().unwrap().clear();
    body.await;
    std::mem::take(&mut *LOG.lock().unwrap())
}

/// Runs each scenario both ways and reports every one whose events differ.
macro_rules! same_events {
    ($($name:ident),* $(,)?) => {{
        let mut differ = Vec::new();
        $(
            let plain = record($name::plain()).await;
            let annotated = record($name::annotated()).await;
            if annotated != plain {
                differ.push(format!(
                    "{}:\n  plain:     {plain:?}\n  annotated: {annotated:?}",
                    stringify!($name)
                ));
            }
        )*
        assert!(differ.is_empty(), "the annotated bodies' events differ:\n{}", differ.join("\n"));
    }};
}

fn run(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

// A `while let` keeps its scrutinee's temporaries (a lock guard, in real code) through the body.
scenario!(while_let_scrutinee_lives_through_the_body {
    let mut items = vec![1, 2];
    while let Some(x) = guard("scrutinee").pop(&mut items) {
        io! { wait().await; log(format!("io {x}")) };
        log(format!("body {x}"));
    }
    log("after");
});

scenario!(while_let_left_from_a_region {
    let mut items = vec![1, 2, 3, 4];
    'items: while let Some(x) = guard("scrutinee").pop(&mut items) {
        io! {
            wait().await;
            if x == 4 {
                continue;
            }
            if x == 2 {
                break 'items;
            }
        }
        log(format!("body {x}"));
    }
    log("after");
});

// A place scrutinee is matched in place: `ref mut` changes the local, not a copy of it.
scenario!(while_let_scrutinee_is_a_place {
    let mut countdown = Some(3u32);
    let mut rounds = 0;
    while let Some(ref mut n) = countdown {
        io! { wait().await };
        rounds += 1;
        if *n == 0 || rounds > 5 {
            break;
        }
        *n -= 1;
    }
    log(format!("{countdown:?} after {rounds} rounds"));
});

scenario!(while_condition_temporaries {
    let mut round = 0;
    #[allow(unused_variables)]
    while guard("left").pass(round < 2) && guard("right").pass(true) {
        io! { wait().await };
        log(format!("body {round}"));
        round += 1;
    }
    log("after");
});

// With attributes on the loop, which must stay on a statement.
scenario!(for_head_lives_through_the_loop {
    #[allow(unused_variables)]
    for x in guard("head").items() {
        io! { wait().await };
        log(format!("body {x}"));
    }
    log("after");
});

scenario!(loop_break_value_temporaries {
    let mut round = 0;
    let n = loop {
        io! { wait().await };
        round += 1;
        if round == 2 {
            break guard("value").len();
        }
        log(format!("round {round}"));
    };
    log(format!("after {n}"));
});

scenario!(labeled_block_temporaries {
    for early in [true, false] {
        let n = 'block: {
            io! { wait().await };
            if early {
                break 'block guard("break value").len();
            }
            guard("tail").len()
        };
        log(format!("after {n}"));
    }
});

scenario!(if_let_scrutinee_in_each_branch {
    for value in [Some(1), None] {
        if let Some(x) = guard("scrutinee").pass(value) {
            io! { wait().await };
            log(format!("then {x}"));
        } else {
            io! { wait().await };
            log("else");
        }
        log("after");
    }
});

scenario!(if_let_in_tail_position {
    if let Some(x) = guard("scrutinee").pass(Some(1)) {
        io! { wait().await; log(format!("then {x}")) }
    } else {
        io! { wait().await; log("else") }
    }
});

/// A `continue` or `break` inside another macro (`select!`) in a region is not rewritten: the
/// condition that runs next, and the code after the loop, must still run as blocking code.
#[blocking_first]
async fn hidden_jumps() {
    let mut items = vec![1, 2, 3];
    while let Some(x) = next_blocking(&mut items) {
        io! {
            tokio::select! {
                () = wait() => if x == 3 { continue } else if x == 1 { break },
            }
        }
        blocking("body");
    }
    blocking("after");
}

async fn every_edition() {
    same_events!(
        while_let_scrutinee_lives_through_the_body,
        while_let_left_from_a_region,
        while_let_scrutinee_is_a_place,
        while_condition_temporaries,
        for_head_lives_through_the_loop,
        loop_break_value_temporaries,
        labeled_block_temporaries,
        if_let_scrutinee_in_each_branch,
        if_let_in_tail_position,
    );
    let events = record(hidden_jumps()).await;
    assert_eq!(
        events,
        ["condition", "condition", "body", "condition", "after"]
    );
}
