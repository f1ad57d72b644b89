//! The built-in multi-task corpus: five tasks whose inputs look different, so that experts have
//! something to specialise on. Deterministic for a seed; nothing is downloaded.
//!
//! Digits and letters are written one per word (`rev a b c = c b a`): a byte-level BPE then
//! gives a symbol the same token in the prompt and in the answer (` a`), so copying, reversing
//! and sorting are a matter of attention, which a two-layer model learns in minutes. Written
//! together (`rev abc>cba`), `abc` and `cba` split into other tokens, and the tiny model got 0%
//! on every task. Sums are of one-digit numbers (`add 7 + 5 = 1 2`, a table of 100 facts).

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Document;

/// Letters per word of `reverse` and `copy`. Fixed, so that each answer letter sits at a fixed
/// distance from its source: what a tiny model learns in a few hundred steps. With lengths 3 to
/// 6 it must find the source by content (an induction head), and at 900 steps it still had 0%.
const WORD_LEN: usize = 4;

/// The tasks, in the order of their ids.
pub const TASKS: &[&str] = &["arithmetic", "reverse", "sort", "copy", "sentence"];

const ADJECTIVES: &[&str] = &["small", "big", "red", "old", "quiet", "happy", "green", "fast"];
const NOUNS: &[&str] = &["cat", "dog", "bird", "fox", "child", "farmer", "robot", "horse"];
const VERBS: &[&str] = &["sees", "finds", "likes", "follows", "paints", "carries", "hears"];
const OBJECTS: &[&str] = &["ball", "tree", "house", "river", "book", "hat", "song", "stone"];
const PLACES: &[&str] = &["park", "garden", "market", "forest", "city", "field"];

/// `n` documents cycling through the tasks, each drawn from `seed`'s random stream.
pub fn corpus(n: usize, seed: u64) -> Vec<Document> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let task = i % TASKS.len();
            Document { text: example(task, &mut rng), task: Some(task) }
        })
        .collect()
}

/// One example of `task`: prompt and answer on one line.
pub fn example(task: usize, rng: &mut impl Rng) -> String {
    let (prompt, answer) = example_parts(task, rng);
    format!("{prompt}{answer}")
}

/// One example of `task` split into the prompt a model is given and the answer it should write.
pub fn example_parts(task: usize, rng: &mut impl Rng) -> (String, String) {
    match task {
        0 => {
            let a = rng.random_range(0..10u32);
            let b = rng.random_range(0..10u32);
            (format!("add {} + {} =", spaced(a), spaced(b)), format!(" {}", spaced(a + b)))
        }
        1 => {
            let word = letters(rng, b'a', WORD_LEN..=WORD_LEN);
            let reversed: Vec<char> = word.iter().rev().copied().collect();
            (format!("rev {} =", join(&word)), format!(" {}", join(&reversed)))
        }
        2 => {
            let n = rng.random_range(3..=6);
            let mut xs: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
            let shown = join(&xs);
            xs.sort_unstable();
            (format!("sort {shown} ="), format!(" {}", join(&xs)))
        }
        3 => {
            let word = letters(rng, b'A', WORD_LEN..=WORD_LEN);
            (format!("copy {} =", join(&word)), format!(" {}", join(&word)))
        }
        _ => {
            let pick = |rng: &mut dyn rand::RngCore, xs: &[&'static str]| *xs.choose(rng).unwrap();
            let subject = format!("the {} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS));
            let rest = format!(" {} a {} in the {}.", pick(rng, VERBS), pick(rng, OBJECTS), pick(rng, PLACES));
            (subject, rest)
        }
    }
}

fn letters(rng: &mut impl Rng, base: u8, len: std::ops::RangeInclusive<usize>) -> Vec<char> {
    let n = rng.random_range(len);
    (0..n).map(|_| (base + rng.random_range(0..26u8)) as char).collect()
}

/// `xs` one per word: `[1, 2, 3]` -> `1 2 3`.
fn join(xs: &[impl ToString]) -> String {
    xs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// A number's digits one per word: `407` -> `4 0 7`.
fn spaced(n: u32) -> String {
    join(&n.to_string().chars().collect::<Vec<_>>())
}

/// Whether `task` has one right answer (all but the templated sentences).
pub fn has_answer(task: usize) -> bool {
    task < 4
}

/// Whether `output` is the right answer to the prompt `example_parts` gave with `answer`:
/// used to report how well the trained model does each task.
pub fn is_correct(answer: &str, output: &str) -> bool {
    output.trim() == answer.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_covers_every_task() {
        let a = corpus(50, 7);
        assert_eq!(a, corpus(50, 7));
        assert_ne!(a, corpus(50, 8));
        for task in 0..TASKS.len() {
            assert!(a.iter().any(|d| d.task == Some(task)));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (p, ans) = example_parts(2, &mut rng);
        let shown: Vec<u32> = p["sort ".len()..p.len() - 2].split(' ').map(|x| x.parse().unwrap()).collect();
        let mut sorted = shown.clone();
        sorted.sort();
        assert_eq!(ans, format!(" {}", join(&sorted)));
        let (p, ans) = example_parts(0, &mut rng);
        let terms: Vec<u32> =
            p["add ".len()..p.len() - 2].split(" + ").map(|t| t.replace(' ', "").parse().unwrap()).collect();
        assert_eq!(ans.replace(' ', "").parse::<u32>().unwrap(), terms[0] + terms[1], "{p}{ans}");
        let (p, ans) = example_parts(1, &mut rng);
        let word: String = p["rev ".len()..p.len() - 2].split(' ').collect();
        assert_eq!(ans.replace(' ', ""), word.chars().rev().collect::<String>());
    }
}
