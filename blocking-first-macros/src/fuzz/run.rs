//! The fuzz run: parameters, cases, the tally, the test.

use super::*;

pub(super) fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// The run's parameters: a fixed seed and count unless the environment asks for more.
pub(super) fn parameters() -> (u64, u64) {
    let seed = env_u64("BLOCKING_FIRST_FUZZ_SEED").unwrap_or(0x0b10_c41f_1257);
    let cases = env_u64("BLOCKING_FIRST_FUZZ_CASES").unwrap_or(1500);
    (seed, cases)
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) generated: u64,
    pub(super) rejected: u64,
    pub(super) accepted: u64,
    pub(super) mutated: u64,
    pub(super) mutated_not_functions: u64,
    pub(super) failures: Vec<String>,
}

pub(super) fn run_case(
    tally: &mut Tally,
    label: &str,
    args: &TokenStream,
    item: &TokenStream,
    expect: Expect,
) {
    if let Err(failure) = check(args, item, expect) {
        if tally.failures.len() < 5 {
            let small = shrink(args, item, expect, &failure);
            tally.failures.push(format!(
                "{label} ({expect:?})\n  args: {args}\n  item: {item}\n  shrunk item: {small}\n  \
                 failure: {failure}"
            ));
        } else {
            tally
                .failures
                .push(format!("{label}: {}", failure.lines().next().unwrap_or("")));
        }
    }
}

#[test]
pub(super) fn the_macro_never_panics_on_generated_and_mutated_functions() {
    let (seed, cases) = parameters();
    let start = Instant::now();
    let mut tally = Tally::default();
    for case in 0..cases {
        let mut rng = Rng::new(seed ^ case.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let generated = generate(&mut rng);
        let label = format!("seed {seed:#x} case {case}");
        let args: TokenStream = generated.args.parse().expect("generated arguments lex");
        let item: TokenStream = generated.item.parse().expect("generated items lex");
        let expect = if generated.must_error {
            Expect::Error
        } else {
            Expect::Accepted
        };
        tally.generated += 1;
        match expect {
            Expect::Error => tally.rejected += 1,
            _ => tally.accepted += 1,
        }
        run_case(&mut tally, &label, &args, &item, expect);

        // The same function, mutated at the token level: two mutants of one to three edits.
        for mutant in 0..2 {
            let (mut margs, mut mitem) = (args.clone(), item.clone());
            for _ in 0..1 + rng.below(3) {
                if rng.chance(85) {
                    mitem = mutate(mitem, &mut rng);
                } else {
                    margs = mutate(margs, &mut rng);
                }
            }
            tally.mutated += 1;
            if syn::parse2::<syn::ItemFn>(mitem.clone()).is_err() {
                tally.mutated_not_functions += 1;
            }
            let label = format!("{label} mutant {mutant}");
            run_case(&mut tally, &label, &margs, &mitem, Expect::Unknown);
        }
    }
    eprintln!(
        "fuzz: seed {seed:#x}, {} generated ({} to reject, {} to accept), {} mutated ({} no \
         longer functions), {} failures, {:?}",
        tally.generated,
        tally.rejected,
        tally.accepted,
        tally.mutated,
        tally.mutated_not_functions,
        tally.failures.len(),
        start.elapsed()
    );
    // The generator must exercise both verdicts, and mutations must break some inputs.
    assert!(
        tally.rejected * 10 > tally.generated,
        "too few rejected inputs"
    );
    assert!(
        tally.accepted * 10 > tally.generated,
        "too few accepted inputs"
    );
    assert!(
        tally.mutated_not_functions > 0,
        "no mutation broke a function"
    );
    assert!(
        tally.failures.is_empty(),
        "{} failing inputs (reproduce with BLOCKING_FIRST_FUZZ_SEED={seed:#x} \
         BLOCKING_FIRST_FUZZ_CASES={cases}):\n{}",
        tally.failures.len(),
        tally.failures.join("\n\n")
    );
}
