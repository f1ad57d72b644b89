//! The run's tokenizer: a given `tokenizer.json`, or a byte-level BPE trained on the corpus with
//! the `tokenizers` crate's trainer.

use std::path::Path;

use moe_generate::TextTokenizer;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::Document;
use crate::error::{Result, TrainError};

/// The special tokens of a trained tokenizer, at Mixtral's ids 0, 1, 2.
pub const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// Reads a `tokenizer.json`; it must define an end-of-sequence token (documents are separated by it).
pub fn load_tokenizer(path: &Path) -> Result<TextTokenizer> {
    let tokenizer = TextTokenizer::from_file(path)?;
    if tokenizer.eos_id().is_none() {
        return Err(TrainError::Tokenizer(format!(
            "{}: no end-of-sequence token (looked for </s>, <|endoftext|>, <eos>, ...)",
            path.display()
        )));
    }
    Ok(tokenizer)
}

/// Trains a byte-level BPE of `vocab_size` tokens (the 3 specials and 256 bytes included) on the
/// documents. Digits are split one by one before merging, which makes arithmetic learnable.
pub fn train_tokenizer(docs: &[Document], vocab_size: usize) -> Result<TextTokenizer> {
    let fail = |e: tokenizers::Error| TrainError::Tokenizer(e.to_string());
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials = SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, docs.iter().map(|d| d.text.as_str())).map_err(fail)?;
    // `tokenizer(text)` then starts with <s>, as Mistral's tokenizers do.
    let bos = tokenizer.token_to_id(SPECIALS[1]).expect("specials are added first");
    let post = TemplateProcessing::builder()
        .try_single("<s> $A")
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?
        .special_tokens(vec![(SPECIALS[1], bos)])
        .build()
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tokenizer.with_post_processor(Some(post));
    Ok(TextTokenizer::new(tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;

    #[test]
    fn trained_bpe_round_trips_and_has_mixtral_specials() {
        let docs = synthetic::corpus(500, 3);
        let tok = train_tokenizer(&docs, 300).unwrap();
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
        assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 259);
        for doc in docs.iter().take(20) {
            let ids = tok.encode(&doc.text, true).unwrap();
            assert_eq!(ids[0], 1);
            assert_eq!(tok.decode(&ids, true).unwrap(), doc.text);
        }
        let ids = tok.encode("12+345=", false).unwrap();
        assert_eq!(ids.len(), 7, "digits are single tokens");
    }
}
