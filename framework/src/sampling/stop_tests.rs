//! Stop handling: the pure matcher over arbitrary splits, and `StopChecker` over the default
//! model's real tokenizer (stop strings spanning tokens, eos, stop ids, length, min_tokens).

use super::*;
use crate::tokenizer::Tokenizer;
use std::sync::{Arc, OnceLock};

/// Pushes `pieces`, checking that every delta extends a prefix of the final text.
fn stream(stops: &[&str], include: bool, pieces: &[&str]) -> (String, Option<usize>, String) {
    let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
    let mut m = StopStrings::new(&stops, include);
    let mut out = String::new();
    let mut matched = None;
    for p in pieces {
        let (d, hit) = m.push(p, true);
        out.push_str(&d);
        if hit.is_some() {
            matched = hit;
            break;
        }
    }
    if matched.is_none() {
        out.push_str(&m.flush());
    }
    (out, matched, m.text().to_owned())
}

#[test]
fn stop_strings_match_across_pieces_and_are_trimmed() {
    let (out, hit, text) = stream(&["o Wor"], false, &["Hel", "lo W", "or", "ld"]);
    assert_eq!((out.as_str(), hit, text.as_str()), ("Hell", Some(0), "Hell"));
    let (out, _, _) = stream(&["o Wor"], true, &["Hel", "lo W", "or", "ld"]);
    assert_eq!(out, "Hello Wor");
    // The earliest match wins over the first listed.
    let (out, hit, _) = stream(&["", "cd", "bc"], false, &["ab", "cd"]);
    assert_eq!((out.as_str(), hit), ("a", Some(2)), "indices follow the given list; empty never matches");
    // A held prefix that does not complete is released.
    let (out, hit, _) = stream(&["abc"], false, &["xa", "b", "d"]);
    assert_eq!((out.as_str(), hit), ("xabd", None));
}

#[test]
fn every_split_streams_exactly_the_trimmed_text() {
    let text = "naïve café — les étoiles, c'est ça. Fin; puis la suite";
    let stops = ["c'est ça", "ça.", "tu", "Fin;"];
    let want = &text[..text.find("c'est ça").unwrap()];
    let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
    for (a, &i) in bounds.iter().enumerate() {
        for &j in &bounds[a..] {
            let pieces = [&text[..i], &text[i..j], &text[j..]];
            let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
            let mut m = StopStrings::new(&stops, false);
            let mut out = String::new();
            for p in pieces {
                let (d, hit) = m.push(p, true);
                out.push_str(&d);
                assert!(want.starts_with(&out), "split {i},{j}: emitted {out:?}");
                if hit.is_some() {
                    break;
                }
            }
            assert_eq!((out.as_str(), m.matched()), (want, Some(0)), "split {i},{j}");
        }
    }
}

fn tokenizer() -> Option<&'static Arc<Tokenizer>> {
    static TOK: OnceLock<Option<Arc<Tokenizer>>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = crate::model::default_model_path();
        if !path.exists() {
            eprintln!("skipping: the default model {} is missing (scripts/fetch-default-model.sh)", path.display());
            return None;
        }
        let loaded = crate::weights::load_model_source(&path).expect("default model loads");
        let spec = loaded.tokenizer.expect("the default GGUF carries a tokenizer");
        Some(Arc::new(Tokenizer::from_spec(spec).expect("tokenizer builds")))
    })
    .as_ref()
}

/// Feeds `ids` until the checker finishes; returns the deltas, the reason and tokens used.
fn check(tok: &Arc<Tokenizer>, params: &SamplingParams, ids: &[u32]) -> (Vec<String>, Option<FinishReason>, usize) {
    let eos = tok.eos_token_ids();
    let mut c = StopChecker::new(params, &eos, Some(tok.clone()));
    let mut deltas = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        let u = c.step(id).unwrap();
        deltas.push(u.text_diff);
        if let Some(r) = u.finish_reason {
            assert_eq!(deltas.concat(), c.text(), "deltas concatenate to the final text");
            assert!(matches!(c.step(id), Err(StopError::AlreadyFinished(_))));
            return (deltas, Some(r), n + 1);
        }
    }
    let end = c.finish(FinishReason::Cancelled);
    assert_eq!(end.finish_reason, Some(FinishReason::Cancelled));
    deltas.push(end.text_diff);
    (deltas, None, ids.len())
}

#[test]
fn stop_string_spanning_tokens_stops_and_is_trimmed() {
    let Some(tok) = tokenizer() else { return };
    let text = "The quick brown fox jumps over the lazy dog. Then it sleeps all day.";
    let ids = tok.encode(text, false).unwrap();
    let stop = "lazy dog";
    // The stop string is spread over several tokens.
    let pieces: Vec<String> = ids.iter().map(|&i| tok.decode(&[i], false).unwrap()).collect();
    assert!(pieces.iter().all(|p| !p.contains(stop)), "{pieces:?}");
    let params = SamplingParams { stop: vec![stop.into(), "never".into()], max_tokens: 100, ..Default::default() };
    let (deltas, reason, used) = check(tok, &params, &ids);
    assert_eq!(reason, Some(FinishReason::Stop(StopKind::StopString(stop.into()))));
    assert_eq!(reason.as_ref().map(FinishReason::as_openai_str), Some("stop"));
    assert_eq!(deltas.concat(), "The quick brown fox jumps over the ");
    assert!(deltas.iter().all(|d| !d.contains("lazy")), "held back, never streamed: {deltas:?}");
    assert!(used < ids.len());
    // Kept with include_stop_str_in_output.
    let params = SamplingParams { include_stop_str_in_output: true, ..params };
    assert_eq!(check(tok, &params, &ids).0.concat(), "The quick brown fox jumps over the lazy dog");
}

#[test]
fn eos_stop_ids_length_and_min_tokens() {
    let Some(tok) = tokenizer() else { return };
    let eos = tok.eos_token_ids();
    assert!(!eos.is_empty());
    let mut ids = tok.encode("Hello there, friend. Bye", false).unwrap();
    let n = ids.len();
    let full = tok.decode(&ids, true).unwrap();
    ids.push(eos[0]);
    ids.extend(tok.encode(" more text", false).unwrap());
    let base = SamplingParams { max_tokens: 50, ..Default::default() };
    let (deltas, reason, used) = check(tok, &base, &ids);
    assert_eq!((reason, used), (Some(FinishReason::Stop(StopKind::Eos(eos[0]))), n + 1));
    assert_eq!(deltas.concat(), full, "the eos text is not output");
    // ignore_eos runs on into max_tokens.
    let p = SamplingParams { ignore_eos: true, max_tokens: n + 2, ..base.clone() };
    let (deltas, reason, _) = check(tok, &p, &ids);
    assert_eq!(reason, Some(FinishReason::Length));
    assert_eq!(reason.as_ref().map(FinishReason::as_openai_str), Some("length"));
    assert_eq!(deltas.concat(), tok.decode(&ids[..n + 2], true).unwrap());
    // A stop token id stops like eos.
    let p = SamplingParams { stop_token_ids: vec![ids[2]], ..base.clone() };
    let (deltas, reason, _) = check(tok, &p, &ids);
    assert_eq!(reason, Some(FinishReason::Stop(StopKind::StopTokenId(ids[2]))));
    assert_eq!(deltas.concat(), tok.decode(&ids[..2], true).unwrap());
    // min_tokens: an early stop string does not count; a later occurrence does.
    let ids = tok.encode("one, two, three, four, five", false).unwrap();
    let p = SamplingParams { stop: vec![",".into()], min_tokens: 3, ..base.clone() };
    let (deltas, reason, _) = check(tok, &p, &ids);
    assert_eq!(reason, Some(FinishReason::Stop(StopKind::StopString(",".into()))));
    assert_eq!(deltas.concat(), "one, two");
    // min_tokens: an eos before it is not a stop (and, being special, adds no text).
    let (a, b) = (ids[0], ids[1]);
    let seq = [a, eos[0], b, eos[0], a];
    let p = SamplingParams { min_tokens: 3, ..base };
    let (deltas, reason, used) = check(tok, &p, &seq);
    assert_eq!((reason, used), (Some(FinishReason::Stop(StopKind::Eos(eos[0]))), 4));
    assert_eq!(deltas.concat(), tok.decode(&[a, b], true).unwrap());
}

#[test]
fn flush_respects_min_tokens() {
    let Some(tok) = tokenizer() else { return };
    // A character split over byte tokens: its first token alone leaves bytes in the decoder,
    // which `flush` turns into U+FFFD, the stop string here.
    let split = ["😀", "🦀", "漢", "ñ"]
        .iter()
        .map(|s| tok.encode(s, false).unwrap())
        .find(|ids| ids.len() > 1 && tok.decode(&ids[..1], true).is_ok_and(|t| t.contains('\u{FFFD}')));
    let Some(ids) = split else {
        eprintln!("skipping: no character of the list is split over byte tokens");
        return;
    };
    let eos = tok.eos_token_ids();
    let base = SamplingParams { stop: vec!["\u{FFFD}".into()], ..SamplingParams::greedy(16) };
    // Below min_tokens the tail is no stop: all of it is returned.
    let p = SamplingParams { min_tokens: 5, ..base.clone() };
    let mut c = StopChecker::new(&p, &eos, Some(tok.clone()));
    let first = c.step(ids[0]).unwrap();
    assert_eq!(first.finish_reason, None);
    let end = c.finish(FinishReason::Cancelled);
    assert_eq!(
        first.text_diff + &end.text_diff,
        "\u{FFFD}",
        "a stop string before min_tokens must not trim the flushed tail"
    );
    assert_eq!(end.finish_reason, Some(FinishReason::Cancelled));
    // Past min_tokens the same tail is a stop string and is trimmed, and is the reason.
    let mut c = StopChecker::new(&base, &eos, Some(tok.clone()));
    let first = c.step(ids[0]).unwrap();
    let end = c.finish(FinishReason::Length);
    assert_eq!(first.text_diff + &end.text_diff, "");
    assert_eq!(end.finish_reason, Some(FinishReason::Stop(StopKind::StopString("\u{FFFD}".into()))));
}

#[test]
fn without_a_tokenizer_only_ids_and_lengths_stop() {
    let params =
        SamplingParams { stop: vec!["x".into()], stop_token_ids: vec![7], max_tokens: 3, ..Default::default() };
    let mut c = StopChecker::new(&params, &[2], None);
    let u = c.step(5).unwrap();
    assert_eq!((u.text_diff.as_str(), u.finish_reason), ("", None));
    assert_eq!(c.step(2).unwrap().finish_reason, Some(FinishReason::Stop(StopKind::Eos(2))));
    let mut c = StopChecker::new(&params, &[2], None);
    assert_eq!(c.step(7).unwrap().finish_reason, Some(FinishReason::Stop(StopKind::StopTokenId(7))));
    let mut c = StopChecker::new(&params, &[2], None);
    let reasons: Vec<_> = [4, 4, 4].iter().map(|&t| c.step(t).unwrap().finish_reason).collect();
    assert_eq!(reasons, vec![None, None, Some(FinishReason::Length)]);
}
