// Edition 2024 only: let chains in a `while` condition.

scenario!(while_let_chain_scrutinees_live_through_the_body {
    let mut items = vec![0, 1, 2];
    while let Some(x) = guard("first").pop(&mut items)
        && let Some(y) = guard("second").pass(x.checked_sub(1))
    {
        io! { wait().await };
        log(format!("body {x} {y}"));
    }
    log("after");
});

#[blocking_first]
async fn hidden_jumps_in_a_let_chain() {
    let mut items = vec![1, 2, 3];
    while let Some(x) = next_blocking(&mut items)
        && x > 0
    {
        io! {
            tokio::select! {
                () = wait() => if x == 3 { continue } else if x == 1 { break },
            }
        }
        blocking("body");
    }
    blocking("after");
}

async fn edition_2024() {
    same_events!(while_let_chain_scrutinees_live_through_the_body);
    let events = record(hidden_jumps_in_a_let_chain()).await;
    assert_eq!(
        events,
        ["condition", "condition", "body", "condition", "after"]
    );
}
