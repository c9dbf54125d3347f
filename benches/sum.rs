//! Parse-and-sum speed of `sumsvc::sum` against a naive `f64` baseline.
//!
//! For each case the same JSON text of 1,000,000 numbers (fixed seed) is summed by
//! `sum_json`, checked by `check`, and parsed into `Vec<f64>` by serde_json and summed
//! naively. Each is timed several times, interleaved; the medians and their ratio are
//! printed. Targets: ratio <= 1.5 for integers and short decimals, <= 3 for long floats.
//!
//! Run with `cargo bench --bench sum`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sumsvc::sum::{check, sum_json, Limits};

const COUNT: usize = 1_000_000;
const REPETITIONS: usize = 9;
const SEED: u64 = 0x5eed_2024_0003;

/// splitmix64: a small, fixed, good-enough generator, so the text is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn sign(&mut self) -> &'static str {
        if self.next() & 1 == 0 {
            ""
        } else {
            "-"
        }
    }
}

/// A JSON array of `COUNT` numbers, each written by `number`.
fn array(rng: &mut Rng, mut number: impl FnMut(&mut Rng, &mut String)) -> String {
    let mut text = String::with_capacity(COUNT * 24);
    text.push('[');
    for i in 0..COUNT {
        if i > 0 {
            text.push(',');
        }
        number(rng, &mut text);
    }
    text.push(']');
    text
}

/// Integers of 1 to 18 digits, either sign: `-48213`, `7`, `902117450022`.
fn integers(rng: &mut Rng) -> String {
    array(rng, |rng, out| {
        let digits = 1 + rng.below(18) as u32;
        let n = rng.below(10u64.pow(digits));
        out.push_str(rng.sign());
        out.push_str(&n.to_string());
    })
}

/// Short decimals with two fraction digits: `123.45`, `-0.07`, `99999.99`.
fn short_decimals(rng: &mut Rng) -> String {
    array(rng, |rng, out| {
        let cents = rng.below(10_000_000);
        out.push_str(rng.sign());
        out.push_str(&format!("{}.{:02}", cents / 100, cents % 100));
    })
}

/// Floats with 17 significant digits and exponents from -30 to 30, as JavaScript or
/// Python print doubles in exponent form: `-1.2345678901234567e-5`.
fn long_floats(rng: &mut Rng) -> String {
    array(rng, |rng, out| {
        let mantissa = 10_000_000_000_000_000 + rng.below(90_000_000_000_000_000);
        let exp = rng.below(61) as i64 - 30;
        let m = mantissa.to_string();
        out.push_str(rng.sign());
        out.push_str(&format!("{}.{}e{}", &m[..1], &m[1..], exp));
    })
}

fn time<T>(f: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    black_box(f());
    start.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut rng = Rng(SEED);
    let cases = [
        ("integers", integers(&mut rng)),
        ("short decimals", short_decimals(&mut rng)),
        ("long floats", long_floats(&mut rng)),
    ];
    let limits = service_limits();

    println!(
        "{COUNT} numbers per case, median of {REPETITIONS} runs \
         (ratio = sum_json / serde_json Vec<f64> + naive sum)"
    );
    for (name, text) in &cases {
        let result = sum_json(text, limits.max_result_digits).expect("the sum succeeds");
        check(text, &limits).expect("the check passes");

        let (mut sums, mut checks, mut baselines) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..REPETITIONS {
            sums.push(time(|| sum_json(black_box(text), limits.max_result_digits)));
            checks.push(time(|| check(black_box(text), &limits)));
            baselines.push(time(|| {
                let numbers: Vec<f64> = serde_json::from_str(black_box(text)).unwrap();
                numbers.iter().sum::<f64>()
            }));
        }
        let (sum, checked, baseline) = (median(sums), median(checks), median(baselines));
        println!(
            "{name:>15}: {:5.1} MB  sum_json {:7.2} ms  check {:7.2} ms  baseline {:7.2} ms  \
             ratio {:.2}  (sum = {})",
            text.len() as f64 / 1e6,
            ms(sum),
            ms(checked),
            ms(baseline),
            sum.as_secs_f64() / baseline.as_secs_f64(),
            if result.len() > 40 {
                format!("{}…", &result[..40])
            } else {
                result
            },
        );
    }
}

/// The limits the service applies by default.
fn service_limits() -> Limits {
    sumsvc::Config::default().limits.sum_limits()
}
