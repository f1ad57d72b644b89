//! The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`) as a `tokenizers`
//! tokenizer, so that a `.gguf` runs with no other file.
//!
//! llama.cpp's `llama` vocabulary is SentencePiece's: tokens with scores, byte tokens
//! `<0xXX>` for what no token covers, a `▁` for every space and one in front of the text.
//! llama.cpp encodes by merging, again and again, the adjacent pair whose concatenation is the
//! token of best score. A `tokenizers` BPE whose merges are ordered by the score of their result
//! does the same (transformers' GGUF converter builds it this way); Unigram, which other
//! converters use, picks the segmentation of best total score instead, which can differ.

use moe_core::gguf::{GgufFile, GgufValue};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

use crate::chat_template::ChatTemplate;
use crate::error::GenerateError;
use crate::tokenizer::TextTokenizer;

/// SentencePiece's space.
const SPACE: &str = "\u{2581}";

/// llama.cpp's token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

impl TextTokenizer {
    /// The tokenizer in `file`'s metadata (`tokenizer.ggml.model = "llama"`), with its BOS/EOS
    /// ids and llama.cpp's `add_bos_token` default (on).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GenerateError> {
        let error = |reason: String| GenerateError::Tokenizer { path: file.path().to_path_buf(), reason };
        let model = file.get("tokenizer.ggml.model").and_then(GgufValue::as_str);
        match model {
            Some("llama") => {}
            None | Some("none") => {
                return Err(error("the file has no tokenizer (`tokenizer.ggml.model`): pass --tokenizer FILE".into()))
            }
            Some(other) => {
                return Err(error(format!(
                    "tokenizer model `{other}` is not supported (only SentencePiece `llama`): pass --tokenizer FILE"
                )))
            }
        }
        let tokens: Vec<&str> = file
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array)
            .and_then(|v| v.iter().map(GgufValue::as_str).collect())
            .ok_or_else(|| error("`tokenizer.ggml.tokens` is missing or not a list of strings".into()))?;
        let n = tokens.len();
        let list = |key: &str, get: fn(&GgufValue) -> Option<f64>| -> Result<Option<Vec<f64>>, GenerateError> {
            match file.get(key).and_then(GgufValue::as_array) {
                None => Ok(None),
                Some(v) if v.len() == n => v
                    .iter()
                    .map(get)
                    .collect::<Option<Vec<_>>>()
                    .map(Some)
                    .ok_or_else(|| error(format!("`{key}` holds non-numbers"))),
                Some(v) => Err(error(format!("`{key}` has {} entries for {n} tokens", v.len()))),
            }
        };
        let scores = list("tokenizer.ggml.scores", GgufValue::as_f64)?.unwrap_or_else(|| vec![0.0; n]);
        let types = list("tokenizer.ggml.token_type", GgufValue::as_f64)?.unwrap_or_else(|| vec![1.0; n]);
        let id_of = |key: &str| file.get(key).and_then(GgufValue::as_u64).and_then(|v| u32::try_from(v).ok());
        let (bos, eos, unk) = (
            id_of("tokenizer.ggml.bos_token_id"),
            id_of("tokenizer.ggml.eos_token_id"),
            id_of("tokenizer.ggml.unknown_token_id").unwrap_or(0),
        );
        for (what, id) in [("bos", bos), ("eos", eos), ("unknown", Some(unk))] {
            if id.is_some_and(|id| id as usize >= n) {
                return Err(error(format!(
                    "the {what} token id {} is outside the {n}-token vocabulary",
                    id.unwrap_or(0)
                )));
            }
        }

        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        if vocab.len() != n {
            return Err(error("`tokenizer.ggml.tokens` lists a token twice".into()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.clone(), merges_by_score(&tokens, &scores, &vocab))
            .unk_token(tokens[unk as usize].to_string())
            .fuse_unk(true)
            .byte_fallback(true)
            .build()
            .map_err(|e| error(format!("cannot build the tokenizer: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let replace = |from: &str, to: &str| Replace::new(from, to).expect("a literal pattern");
        tokenizer.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPACE.into())),
            NormalizerWrapper::Replace(replace(" ", SPACE)),
        ]))));
        tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
            DecoderWrapper::Replace(replace(SPACE, " ")),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
            DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
        ]))));
        // Control tokens (<s>, </s>, chat markers) are special; user-defined ones are matched whole.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter_map(|(t, &ty)| match ty as i64 {
                CONTROL => Some(AddedToken::from(t.to_string(), true)),
                USER_DEFINED => Some(AddedToken::from(t.to_string(), false)),
                _ => None,
            })
            .collect();
        tokenizer.add_tokens(&added);
        let add_bos = file.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(true);
        if let (true, Some(bos)) = (add_bos, bos) {
            let name = tokens[bos as usize];
            let template = TemplateProcessing::builder()
                .try_single(format!("{name} $A"))
                .and_then(|b| b.special_tokens(vec![(name, bos)]).build().map_err(|e| e.to_string()))
                .map_err(|e| error(format!("cannot add the BOS token: {e}")))?;
            tokenizer.with_post_processor(Some(template));
        }
        let tokenizer = Self::new(tokenizer).with_special_ids(bos, eos);
        // The model's chat template, with its BOS/EOS token texts.
        match file.get("tokenizer.chat_template").and_then(GgufValue::as_str) {
            Some(source) => {
                let text = |id: Option<u32>| id.map(|id| tokens[id as usize].to_string());
                Ok(tokenizer.with_chat_template(ChatTemplate::new(source, text(bos), text(eos))?))
            }
            None => Ok(tokenizer),
        }
    }
}

/// BPE merges for a SentencePiece vocabulary: every split of every token into two tokens,
/// best-scoring result first (ties: the split's ids, as transformers orders them).
fn merges_by_score(tokens: &[&str], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    let mut merges: Vec<(f64, u32, u32, &str, &str)> = Vec::new();
    for (token, &score) in tokens.iter().zip(scores) {
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                merges.push((score, l, r, left, right));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    merges.into_iter().map(|(_, _, _, l, r)| (l.to_string(), r.to_string())).collect()
}

impl TextTokenizer {
    /// This tokenizer as GGUF `tokenizer.ggml.*` metadata (llama.cpp's `llama` vocabulary),
    /// for the SentencePiece-style BPE tokenizers Mistral and Llama 2 publish (`byte_fallback`,
    /// `▁` for spaces): the inverse of [`Self::from_gguf`]. A token made by merge `r` gets
    /// score `-r`, so llama.cpp's best-score-first merging applies the merges in their order.
    pub fn to_gguf_metadata(&self) -> Result<Vec<(String, GgufValue)>, GenerateError> {
        let error = |reason: String| GenerateError::Tokenizer { path: "tokenizer.json".into(), reason };
        let json: serde_json::Value = self
            .inner()
            .to_string(false)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| error("cannot serialise the tokenizer".into()))?;
        let model = &json["model"];
        if model["type"] != "BPE" || model["byte_fallback"] != true {
            return Err(error(
                "only SentencePiece-style BPE tokenizers (byte_fallback, as Mistral's) convert to a GGUF vocabulary"
                    .into(),
            ));
        }
        let vocab = self.inner().get_vocab(true);
        let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let mut tokens = vec![None; n];
        for (t, &id) in &vocab {
            tokens[id as usize] = Some(t.clone());
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| t.ok_or_else(|| error(format!("the vocabulary has no token {id}"))))
            .collect::<Result<_, _>>()?;
        let mut scores = vec![0.0f32; n];
        let merges = model["merges"].as_array().cloned().unwrap_or_default();
        for (rank, merge) in merges.iter().enumerate() {
            // Either ["a", "b"] or "a b" (older files).
            let joined = match merge {
                serde_json::Value::Array(p) => p.iter().filter_map(|x| x.as_str()).collect::<String>(),
                serde_json::Value::String(s) => s.replacen(' ', "", 1),
                _ => continue,
            };
            if let Some(&id) = vocab.get(&joined) {
                scores[id as usize] = -(rank as f32) - 1.0;
            }
        }
        let special: std::collections::HashSet<u32> =
            self.inner().get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        let unk = model["unk_token"].as_str().and_then(|u| vocab.get(u)).copied();
        let types: Vec<GgufValue> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                let id = id as u32;
                let ty = if Some(id) == unk {
                    2
                } else if special.contains(&id) {
                    CONTROL
                } else if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                    6
                } else {
                    1
                };
                GgufValue::I32(ty as i32)
            })
            .collect();
        let adds_bos =
            self.bos_id().is_some_and(|bos| self.encode("a", true).is_ok_and(|ids| ids.first() == Some(&bos)));
        let mut out = vec![
            ("tokenizer.ggml.model".to_string(), GgufValue::String("llama".into())),
            ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect())),
            ("tokenizer.ggml.scores".into(), GgufValue::Array(scores.into_iter().map(GgufValue::F32).collect())),
            ("tokenizer.ggml.token_type".into(), GgufValue::Array(types)),
            ("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(adds_bos)),
            ("tokenizer.ggml.add_eos_token".into(), GgufValue::Bool(false)),
        ];
        if let Some(unk) = unk {
            out.push(("tokenizer.ggml.unknown_token_id".into(), GgufValue::U32(unk)));
        }
        Ok(out)
    }
}
