//! What the compiler says about misused regions and signatures (`tests/ui/fail`), and code that
//! must compile (`tests/ui/pass`). Accept new messages with `TRYBUILD=overwrite cargo test -p blocking-first-ui`
//! after reading every one: they are the user's experience.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
