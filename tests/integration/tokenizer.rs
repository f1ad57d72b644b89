//! Tokenizer parity with HF `tokenizers` (cases.json), streaming decode and stop strings.

use moe_infer::{TextCollector, TextTokenizer};

use crate::common::*;

fn fixture_tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(fixture("tokenizer").join("tokenizer.json")).unwrap()
}

#[test]
fn encode_and_decode_match_transformers_cases() {
    let tokenizer = fixture_tokenizer();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer").join("cases.json")).unwrap()).unwrap();
    assert_eq!(tokenizer.vocab_size() as u64, cases["vocab_size"].as_u64().unwrap());
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (Some(1), Some(2)));
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(text, true).unwrap();
        assert_eq!(ids, want, "encode {text:?}");
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), case["decoded"].as_str().unwrap(), "decode {text:?}");
    }
}

#[test]
fn streamed_text_equals_decoded_text_and_stops_at_stop_strings() {
    let tokenizer = fixture_tokenizer();
    // Byte-fallback characters span several tokens: the stream must not cut them.
    let prompt = tokenizer.encode("héllo", true).unwrap();
    let full = tokenizer.encode("héllo wörld ✓ 日本 done", true).unwrap();
    let mut collector = TextCollector::new(&tokenizer, &prompt, &[]).unwrap();
    let mut streamed = String::new();
    for &id in &full[prompt.len()..] {
        let (piece, go_on) = collector.push(id).unwrap();
        assert!(go_on);
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        streamed.push_str(&piece);
    }
    streamed.push_str(&collector.finish());
    assert_eq!(streamed, " wörld ✓ 日本 done");

    let stops = vec!["日本".to_string()];
    let mut collector = TextCollector::new(&tokenizer, &prompt, &stops).unwrap();
    let mut shown = String::new();
    let mut ended = false;
    for &id in &full[prompt.len()..] {
        let (piece, go_on) = collector.push(id).unwrap();
        shown.push_str(&piece);
        if !go_on {
            ended = true;
            break;
        }
    }
    shown.push_str(&collector.finish());
    assert!(ended, "the stop string ends generation");
    assert_eq!(shown, " wörld ✓ ");
    assert_eq!(collector.text(), " wörld ✓ ");
}
