//! Both tokenizers round-trip text, and decoding never panics on what a sampler can produce.

use anychip_data::{tokenizer, TokenizerKind};

const SAMPLES: &[&str] = &[
    "",
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n\n",
    "naïve café — “quoted” – Ünïcödé, 日本語のテキスト, Ελληνικά, emoji 🦀🎭 and ZWJ 👩‍👩‍👧",
    "  leading and trailing spaces \t\r\n",
    "<|endoftext|> is plain text here",
    "\u{0}\u{1f}control bytes\u{7f}",
];

#[test]
fn byte_tokenizer_round_trips_and_is_one_id_per_byte() {
    let t = tokenizer(TokenizerKind::Bytes).unwrap();
    assert_eq!((t.name(), t.vocab_size(), t.eot()), ("bytes", 256, None));
    for s in SAMPLES {
        let ids = t.encode(s);
        assert_eq!(ids.len(), s.len());
        assert!(ids.iter().all(|&i| i < 256));
        assert_eq!(t.decode(&ids), *s);
    }
    assert_eq!(t.encode("é"), vec![0xC3, 0xA9]);
}

#[test]
fn gpt2_matches_openai_ids_offline() {
    let t = tokenizer(TokenizerKind::Gpt2).unwrap();
    assert_eq!((t.name(), t.vocab_size(), t.eot()), ("gpt2", 50257, Some(50256)));
    // Reference ids from OpenAI's GPT-2 encoder (tiktoken "gpt2" / r50k_base).
    assert_eq!(t.encode("Hello world"), vec![15496, 995]);
    assert_eq!(t.encode(" the"), vec![262]);
    assert_eq!(t.decode(&[50256]), "<|endoftext|>");
    // Special-token syntax inside a corpus is just text, never the eot id.
    assert!(!t.encode("<|endoftext|>").contains(&50256));
}

#[test]
fn gpt2_round_trips_non_ascii() {
    let t = tokenizer(TokenizerKind::Gpt2).unwrap();
    for s in SAMPLES {
        let ids = t.encode(s);
        assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
        assert_eq!(t.decode(&ids), *s, "{ids:?}");
    }
    let long = SAMPLES.concat().repeat(50);
    let ids = t.encode(&long);
    assert!(ids.len() < long.len(), "BPE should compress: {} ids for {} bytes", ids.len(), long.len());
    assert_eq!(t.decode(&ids), long);
}

#[test]
fn gpt2_decodes_cut_characters_and_bad_ids_without_panicking() {
    let t = tokenizer(TokenizerKind::Gpt2).unwrap();
    let ids = t.encode("🦀");
    assert!(ids.len() > 1, "the crab emoji is split across byte tokens: {ids:?}");
    let partial = t.decode(&ids[..1]);
    assert!(partial.contains('\u{FFFD}'), "{partial:?}");
    assert_eq!(t.decode(&[15496, 50257, u32::MAX, 995]), "Hello\u{FFFD}\u{FFFD} world");
}

#[test]
fn gpt2_survives_long_whitespace_runs() {
    // Whitespace runs exercise the regex's lookahead; they must encode and round-trip, not panic.
    let t = tokenizer(TokenizerKind::Gpt2).unwrap();
    let s = format!("a{}b{}", " ".repeat(20_000), "\n".repeat(20_000));
    assert_eq!(t.decode(&t.encode(&s)), s);
}
