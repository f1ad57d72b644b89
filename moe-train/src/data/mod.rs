//! Training data: documents (built-in or the user's), a tokenizer, and packed sequences.

pub mod packing;
pub mod sources;
pub mod synthetic;
pub mod tokenizer;

pub use packing::{PackedData, Split};
pub use sources::load_documents;
pub use tokenizer::{load_tokenizer, train_tokenizer};

/// One document: a piece of text that is packed as `<s> text </s>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The text.
    pub text: String,
    /// For the built-in corpus: which task (index into [`synthetic::TASKS`]) the text belongs to.
    /// Routing statistics per task use it.
    pub task: Option<usize>,
}
