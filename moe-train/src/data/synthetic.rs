//! The built-in multi-task corpus: five tasks whose inputs look different, so that experts have
//! something to specialise on. Deterministic for a seed; nothing is downloaded.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Document;

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
            let a = rng.random_range(0..500u32);
            let b = rng.random_range(0..500u32);
            (format!("{a}+{b}="), (a + b).to_string())
        }
        1 => {
            let word = letters(rng, b'a', 3..=7);
            (format!("rev {word}>"), word.chars().rev().collect())
        }
        2 => {
            let n = rng.random_range(3..=6);
            let mut xs: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
            let shown = join(&xs);
            xs.sort_unstable();
            (format!("sort {shown}>"), join(&xs))
        }
        3 => {
            let word = letters(rng, b'A', 3..=7);
            (format!("copy {word}>"), word)
        }
        _ => {
            let pick = |rng: &mut dyn rand::RngCore, xs: &[&'static str]| *xs.choose(rng).unwrap();
            let subject = format!("the {} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS));
            let rest = format!(" {} a {} in the {}.", pick(rng, VERBS), pick(rng, OBJECTS), pick(rng, PLACES));
            (subject, rest)
        }
    }
}

fn letters(rng: &mut impl Rng, base: u8, len: std::ops::RangeInclusive<usize>) -> String {
    let n = rng.random_range(len);
    (0..n).map(|_| (base + rng.random_range(0..26u8)) as char).collect()
}

fn join(xs: &[u32]) -> String {
    xs.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// Whether `task` has one right answer (all but the templated sentences).
pub fn has_answer(task: usize) -> bool {
    task < 4
}

/// Whether `output` is the right answer to the prompt `example_parts` gave with `answer`:
/// used to report how well the trained model does each task.
pub fn is_correct(answer: &str, output: &str) -> bool {
    output.trim_end() == answer
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
        let shown: Vec<u32> = p["sort ".len()..p.len() - 1].split(' ').map(|x| x.parse().unwrap()).collect();
        let mut sorted = shown.clone();
        sorted.sort();
        assert_eq!(ans, join(&sorted));
    }
}
