//! Realistic answers of small models to both self-explanation formats, and arbitrary text.

use super::*;

/// Word units of `sentence` as Glassbox cuts them: split at whitespace, every unit but the
/// first keeping its leading whitespace, character spans.
fn units(sentence: &str) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut start = 0;
    let mut has_word = false;
    let mut push = |text: &str, start: usize, end: usize| {
        out.push(Unit {
            label: text.trim().to_string(),
            text: text.to_string(),
            level: "word".into(),
            span: Some((start, end)),
        })
    };
    let mut end = 0;
    for (i, c) in sentence.chars().enumerate() {
        if c.is_whitespace() && has_word {
            push(&text, start, i);
            text.clear();
            start = i;
            has_word = false;
        }
        text.push(c);
        has_word |= !c.is_whitespace();
        end = i + 1;
    }
    if has_word {
        push(&text, start, end);
    }
    out
}

/// "The acting was great but the plot was boring." as units 0..=8:
/// The acting was great but the plot was boring.
const REVIEW: &str = "The acting was great but the plot was boring.";

fn top(raw: &str, k: usize, sentence: &str) -> ParsedExplanation {
    let parsed = parse_explanation(raw, &AnswerFormat::TopK { k }, &units(sentence));
    check_invariants(&parsed, sentence);
    parsed
}

fn scored(raw: &str, sentence: &str) -> ParsedExplanation {
    let parsed = parse_explanation(raw, &AnswerFormat::Scores, &units(sentence));
    check_invariants(&parsed, sentence);
    parsed
}

/// What must hold for every answer: one score per unit, in range, and a failed parse that
/// scores nothing.
fn check_invariants(p: &ParsedExplanation, sentence: &str) {
    let n = units(sentence).len();
    assert_eq!(p.scores.len(), n, "{p:#?}");
    assert_eq!(p.mentioned.len(), n);
    assert!(
        p.scores.iter().all(|s| s.is_finite() && s.abs() <= 1.0),
        "{p:#?}"
    );
    for (s, m) in p.scores.iter().zip(&p.mentioned) {
        assert!(*m || *s == 0.0, "unmentioned units score 0: {p:#?}");
    }
    assert_eq!(p.is_usable(), p.mentioned.contains(&true), "{p:#?}");
    for item in &p.items {
        assert!(item.units.iter().all(|&u| u < n));
    }
}

fn assert_scores(p: &ParsedExplanation, expected: &[f64]) {
    assert_eq!(p.scores.len(), expected.len(), "{p:#?}");
    for (got, want) in p.scores.iter().zip(expected) {
        assert!(
            (got - want).abs() < 1e-9,
            "scores {:?}, expected {expected:?}\n{p:#?}",
            p.scores
        );
    }
}

fn reasons(p: &ParsedExplanation) -> Vec<PartialReason> {
    match &p.status {
        ParseStatus::Partial { reasons } => reasons.clone(),
        _ => Vec::new(),
    }
}

fn failure(p: &ParsedExplanation) -> Option<FailReason> {
    match &p.status {
        ParseStatus::Failed { reason } => Some(reason.clone()),
        _ => None,
    }
}

const T: f64 = 1.0 / 3.0;
/// great 1, boring 2/3, plot 1/3 on [`REVIEW`].
const GREAT_BORING_PLOT: [f64; 9] = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, T, 0.0, 2.0 * T];

// ---- top-k answers -----------------------------------------------------------------------

#[test]
fn topk_every_list_style_reads_the_same() {
    let answers = [
        r#"["great", "boring", "plot"]"#,
        "Sure! Here you go:\n```json\n[\"great\", \"boring\", \"plot\"]\n```",
        r#"{"words": ["great", "boring", "plot"]}"#,
        r#"{"great": 0.9, "boring": 0.7, "plot": 0.2}"#,
        r#"[{"word": "great", "rank": 1}, {"word": "boring", "rank": 2}, {"word": "plot"}]"#,
        "1. great\n2. boring\n3. plot",
        "1) **Great** - expresses a positive opinion\n2) boring: shows it is negative\n\
         3) plot (what the review is about)",
        "Here are the 3 most important words:\n- Great\n- Boring.\n- plot",
        "great, boring, plot",
        "The most important words are: great, boring and plot.",
        "The most important words are great, boring and plot.",
        "The words \"great\", 'boring' and “plot” matter most.",
        "GREAT!\nboring...\nPlot;",
        "great boring plot",
        "Answer: great; boring; plot",
        "* `great`\n* `boring`\n* `plot`",
        "Sure, the most important words are great, boring, plot",
        "great, boring, plot. These words are positive.",
        "1. great - The word great expresses a positive sentiment.\n2. boring - negative\n3. plot",
        "Here are the top 3 words: great (1), boring (2), plot (3)",
        "Words: 1) great 2) boring 3) plot",
        r#"{"prediction": "positive", "words": {"1": "great", "2": "boring", "3": "plot"}}"#,
    ];
    for raw in answers {
        let p = top(raw, 3, REVIEW);
        assert_eq!(p.status, ParseStatus::Complete, "{raw}\n{p:#?}");
        assert_scores(&p, &GREAT_BORING_PLOT);
        assert!(p.unmatched.is_empty(), "{raw}: {:?}", p.unmatched);
    }
}

#[test]
fn topk_words_not_in_the_input_are_reported_and_do_not_take_a_rank() {
    let p = top("great, awesome, boring", 3, REVIEW);
    assert_eq!(p.unmatched, ["awesome"]);
    assert_scores(&p, &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0 * T]);
    assert_eq!(
        reasons(&p),
        [
            PartialReason::Unmatched { count: 1 },
            PartialReason::TooFew { asked: 3, given: 2 }
        ]
    );
    assert_eq!(p.items[1].notes, [ItemNote::Unmatched]);
}

#[test]
fn topk_a_word_named_twice_that_occurs_once_is_a_repeat() {
    let p = top("1. great\n2. great\n3. boring\n4. plot", 3, REVIEW);
    assert_scores(&p, &GREAT_BORING_PLOT);
    assert_eq!(reasons(&p), [PartialReason::Repeated { count: 1 }]);
    assert_eq!(p.items[1].notes, [ItemNote::Repeated]);
    assert_eq!(p.items[1].score, None);
}

#[test]
fn topk_too_few_and_too_many_words() {
    let few = top("great", 3, REVIEW);
    assert!(few.is_usable());
    assert_eq!(
        reasons(&few),
        [PartialReason::TooFew { asked: 3, given: 1 }]
    );
    assert_eq!(few.scores[3], 1.0, "ranks keep the denominator k: 1st is 1");

    let many = top("great, boring, plot, acting", 3, REVIEW);
    assert_scores(&many, &GREAT_BORING_PLOT);
    assert_eq!(
        reasons(&many),
        [PartialReason::TooMany { asked: 3, given: 4 }]
    );
    assert_eq!(many.items[3].notes, [ItemNote::BeyondK]);
    assert!(!many.mentioned[1], "acting came after the k-th word");
}

#[test]
fn topk_k_larger_than_the_input_is_not_too_few() {
    let p = top("great, movie", 5, "Great movie!");
    assert_eq!(p.status, ParseStatus::Complete);
    assert_scores(&p, &[1.0, 0.8]);
}

#[test]
fn topk_phrases_match_consecutive_words() {
    let sentence = "The food was not good at all";
    let p = top("1. not good\n2. food", 2, sentence);
    assert_eq!(p.status, ParseStatus::Complete);
    assert_scores(&p, &[0.0, 0.5, 0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(p.items[0].units, [3, 4]);
}

#[test]
fn topk_a_word_named_once_scores_all_its_occurrences() {
    let sentence = "good food, good service, bad music";
    let p = top("good, bad", 2, sentence);
    assert_eq!(p.status, ParseStatus::Complete);
    assert_scores(&p, &[1.0, 0.0, 1.0, 0.0, 0.5, 0.0]);
    assert_eq!(p.items[0].units, [0, 2]);
    assert_eq!(p.items[0].notes, [ItemNote::AppliedToRepeats { count: 1 }]);

    // Named twice, the mentions take the occurrences in order.
    let twice = top("good, good, bad", 3, sentence);
    assert_scores(&twice, &[1.0, 0.0, 2.0 * T, 0.0, T, 0.0]);
    assert_eq!(twice.status, ParseStatus::Complete);
}

#[test]
fn topk_truncated_json_keeps_what_came_before_the_cut() {
    let p = top(r#"["great", "boring", "pl"#, 3, REVIEW);
    assert_scores(&p, &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0 * T]);
    assert_eq!(
        reasons(&p),
        [
            PartialReason::Truncated,
            PartialReason::TooFew { asked: 3, given: 2 }
        ]
    );
}

#[test]
fn topk_unicode_words_match_across_case_and_apostrophes() {
    let sentence = "Le jeu était GÉNIAL, l’intrigue ennuyeuse 😴";
    let p = top("génial, l'intrigue, Ennuyeuse!", 3, sentence);
    assert_eq!(p.status, ParseStatus::Complete, "{p:#?}");
    assert_scores(&p, &[0.0, 0.0, 0.0, 1.0, 2.0 * T, T, 0.0]);
}

#[test]
fn topk_answers_without_an_explanation_fail() {
    let cases = [
        ("", FailReason::Empty),
        ("  \n\t", FailReason::Empty),
        ("N/A", FailReason::NoItems),
        ("I think the review is positive.", FailReason::NoItems),
        (
            "Sure! Here are the most important words:",
            FailReason::NoItems,
        ),
        (
            "List the 3 most important words in: The acting was great but the plot was boring.",
            FailReason::EchoOnly,
        ),
        (
            "asdf qwerty ### 123",
            FailReason::NothingAligned { items: 1 },
        ),
        (
            r#"["awesome", "fantastic"]"#,
            FailReason::NothingAligned { items: 2 },
        ),
    ];
    for (raw, reason) in cases {
        let p = top(raw, 3, REVIEW);
        assert_eq!(failure(&p), Some(reason), "{raw:?}\n{p:#?}");
        assert!(!p.is_usable());
        assert_eq!(p.scores, vec![0.0; 9]);
        assert_eq!(p.raw, raw, "the raw answer is kept");
    }
}

#[test]
fn an_echoed_input_is_removed_before_the_answer_is_read() {
    let raw = "Text: The acting was great but the plot was boring.\nImportant words: great, boring";
    let p = top(raw, 2, REVIEW);
    assert_eq!(p.status, ParseStatus::Complete, "{p:#?}");
    assert_scores(&p, &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5]);
}

#[test]
fn degenerate_requests_fail_with_what_to_fix() {
    let zero = top("great", 0, REVIEW);
    assert_eq!(failure(&zero), Some(FailReason::NoWordsRequested));
    let no_words = parse_explanation("great", &AnswerFormat::Scores, &[]);
    assert_eq!(failure(&no_words), Some(FailReason::NoInputWords));
    assert!(no_words.scores.is_empty());
    assert!(
        FailReason::NoInputWords
            .to_string()
            .contains("pass the input's word units")
    );
    let punctuation_only = scored("great: 1", "-- !!");
    assert_eq!(failure(&punctuation_only), Some(FailReason::NoInputWords));
}

// ---- score answers -----------------------------------------------------------------------

#[test]
fn scores_json_object_for_every_word_in_order() {
    let raw = r#"{"The": 0.0, "acting": 0.6, "was": 0.0, "great": 0.9, "but": -0.1,
                 "the": 0.0, "plot": -0.3, "was": 0.05, "boring": -0.8}"#;
    let p = scored(raw, REVIEW);
    assert_eq!(p.status, ParseStatus::Complete, "{p:#?}");
    assert_scores(&p, &[0.0, 0.6, 0.0, 0.9, -0.1, 0.0, -0.3, 0.05, -0.8]);
    assert!(p.mentioned.iter().all(|m| *m), "stated zeros are mentioned");
}

#[test]
fn scores_json_pairs_and_word_objects() {
    let expected = [0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, -0.8];
    for raw in [
        r#"[["great", 0.9], ["boring", -0.8]]"#,
        r#"[{"word": "great", "score": 0.9}, {"word": "boring", "score": -0.8}]"#,
        r#"{"scores": {"great": 0.9, "boring": -0.8}}"#,
        r#"Here is the JSON: [{"token": "Great", "importance": 0.9}, {"token": "boring.", "importance": -0.8}] Done."#,
    ] {
        let p = scored(raw, REVIEW);
        assert_scores(&p, &expected);
        assert_eq!(reasons(&p), [PartialReason::Missing { count: 7 }], "{raw}");
        assert!(!p.mentioned[0] && p.mentioned[3]);
    }
}

#[test]
fn scores_text_lines_in_every_separator_style() {
    let expected = [0.0, 0.5, 0.0, 0.9, 0.0, 0.0, 0.3, 0.0, -0.8];
    for raw in [
        "Here are the scores:\ngreat: 0.9\nboring: -0.8\nplot: 0.3\nacting: 0.5\nOverall the review is mixed.",
        "great = 0.9, boring = -0.8, plot = 0.3, acting = 0.5",
        "great (0.9), boring (-0.8), plot (0.3), acting (+0.5)",
        "great - 0.9\nboring: -0.8\nplot - 0.3\nacting - 0.5",
        "- **great**: 0.9\n- **boring**: −0.8\n- **plot**: 0.3\n- **acting**: 0.5",
        "1. great: 0.9\n2. boring: -0.8\n3. plot: 0.3\n4. acting: .5",
        "{'great': 0.9, 'boring': -0.8, 'plot': 0.3, 'acting': 0.5}",
        r#"[("great", 0.9), ("boring", -0.8), ("plot", 0.3), ("acting", 0.5)]"#,
        "| word | score |\n|---|---|\n| great | 0.9 |\n| boring | -0.8 |\n| plot | 0.3 |\n| acting | 0.5 |",
        "great (score: 0.9), boring (score: -0.8), plot (score: 0.3), acting (score: 0.5)",
        r#"{"great": 0.9, "boring": -0.8, "plot": 0.3, "acting": 0.5,}"#,
    ] {
        let p = scored(raw, REVIEW);
        assert_scores(&p, &expected);
        assert_eq!(
            reasons(&p),
            [PartialReason::Missing { count: 5 }],
            "{raw}\n{p:#?}"
        );
    }
}

#[test]
fn scores_the_prompt_range_is_not_read_as_scores() {
    let raw =
        "Here are the scores for each word (from -1 to 1), in [-1, 1]:\nacting: 0.5\ngreat: 0.9";
    let p = scored(raw, REVIEW);
    assert_eq!(p.items.len(), 2, "{p:#?}");
    assert_eq!((p.scores[1], p.scores[3]), (0.5, 0.9));
}

#[test]
fn scores_outside_the_range_are_clamped_and_flagged() {
    let p = scored(r#"{"great": 2.5, "boring": -10, "plot": 1}"#, REVIEW);
    assert_eq!(p.scores[3], 1.0);
    assert_eq!(p.scores[8], -1.0);
    assert_eq!(p.scores[6], 1.0);
    assert_eq!(p.items[0].notes, [ItemNote::Clamped { given: 2.5 }]);
    assert_eq!(p.items[1].notes, [ItemNote::Clamped { given: -10.0 }]);
    assert!(p.items[2].notes.is_empty(), "1 is in range");
    assert_eq!(
        reasons(&p),
        [
            PartialReason::Clamped { count: 2 },
            PartialReason::Missing { count: 6 }
        ]
    );
}

#[test]
fn scores_truncated_json_recovers_the_complete_pairs() {
    for raw in [
        r#"{"great": 0.9, "boring": -0.8, "plot": -0."#,
        r#"```json
{"great": 0.9, "boring": -0.8, "pl"#,
        r#"[{"word": "great", "score": 0.9}, {"word": "boring", "score": -0.8}, {"word": "plo"#,
    ] {
        let p = scored(raw, REVIEW);
        assert_scores(&p, &[0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, -0.8]);
        assert_eq!(
            reasons(&p),
            [
                PartialReason::Truncated,
                PartialReason::Missing { count: 7 }
            ],
            "{raw}"
        );
    }
}

#[test]
fn scores_given_as_strings_are_read_and_noted() {
    let p = scored(r#"{"great": "0.9", "boring": " -0.8 "}"#, REVIEW);
    assert_eq!((p.scores[3], p.scores[8]), (0.9, -0.8));
    assert_eq!(p.items[0].notes, [ItemNote::ScoreFromString]);
    assert_eq!(reasons(&p), [PartialReason::Missing { count: 7 }]);
}

#[test]
fn scores_marked_not_applicable_are_not_mentioned() {
    for raw in [
        r#"{"great": 0.9, "plot": "N/A"}"#,
        "great: 0.9\nplot: N/A",
        r#"{"great": 0.9, "plot": null}"#,
    ] {
        let p = scored(raw, REVIEW);
        assert_eq!(p.scores[3], 0.9);
        assert!(!p.mentioned[6], "{raw}: N/A is not a score of 0");
        assert!(
            matches!(
                &p.items[1].notes[..],
                [ItemNote::NoScore { given: Some(_) }]
            ),
            "{raw}: {:?}",
            p.items[1]
        );
        assert_eq!(
            reasons(&p),
            [
                PartialReason::Unscored { count: 1 },
                PartialReason::Missing { count: 8 }
            ]
        );
    }
}

#[test]
fn scores_answers_without_readable_scores_fail() {
    let cases = [
        (r#"["great", "boring"]"#, FailReason::NoScores),
        (
            r#"{"great": "high", "boring": "low"}"#,
            FailReason::NoScores,
        ),
        ("N/A", FailReason::NoItems),
        ("The review is positive overall.", FailReason::NoItems),
        (
            "Give every word of \"The acting was great but the plot was boring.\" a score in [-1, 1].",
            FailReason::EchoOnly,
        ),
        (
            r#"{"awesome": 0.9}"#,
            FailReason::NothingAligned { items: 1 },
        ),
        ("", FailReason::Empty),
    ];
    for (raw, reason) in cases {
        let p = scored(raw, REVIEW);
        assert_eq!(failure(&p), Some(reason), "{raw:?}\n{p:#?}");
        assert_eq!(p.scores, vec![0.0; 9]);
    }
}

#[test]
fn scores_for_words_not_in_the_input_are_unmatched() {
    let p = scored(r#"{"great": 0.9, "awesome": 0.8}"#, REVIEW);
    assert_eq!(p.unmatched, ["awesome"]);
    assert_eq!(
        p.items[1].score,
        Some(0.8),
        "the given score is kept for inspection"
    );
    assert!(reasons(&p).contains(&PartialReason::Unmatched { count: 1 }));
}

#[test]
fn scores_words_named_more_often_than_they_occur_keep_the_first_score() {
    let p = scored(r#"{"great": 0.9, "great": 0.5}"#, REVIEW);
    assert_eq!(p.scores[3], 0.9);
    assert_eq!(p.items[1].notes, [ItemNote::Repeated]);
    assert_eq!(p.items[1].score, Some(0.5));
}

#[test]
fn scores_a_word_named_once_scores_every_occurrence() {
    let p = scored("was: 0.1\ngreat: 0.9", REVIEW);
    assert_eq!((p.scores[2], p.scores[7]), (0.1, 0.1));
    assert_eq!(p.items[0].units, [2, 7]);
    assert_eq!(p.items[0].notes, [ItemNote::AppliedToRepeats { count: 1 }]);
}

#[test]
fn scores_phrases_and_labelled_words() {
    let sentence = "The food was not good at all";
    let p = scored("not good: -0.7\nScore for food: 0.2", sentence);
    assert_scores(&p, &[0.0, 0.2, 0.0, -0.7, -0.7, 0.0, 0.0]);
    assert_eq!(
        p.items[1].notes,
        [ItemNote::TrimmedFrom {
            phrase: "Score for food".into()
        }]
    );
}

// ---- across answers ----------------------------------------------------------------------

#[test]
fn summary_counts_outcomes_and_reasons() {
    let answers = [
        top("great, boring, plot", 3, REVIEW),
        top("great", 3, REVIEW),
        top("great, awesome", 3, REVIEW),
        top("", 3, REVIEW),
        scored("N/A", REVIEW),
    ];
    let mut summary = ParseSummary::default();
    assert_eq!(summary.usable_rate(), None);
    summary.extend(&answers);
    assert_eq!(
        (summary.complete, summary.partial, summary.failed),
        (1, 2, 2)
    );
    assert_eq!(summary.total(), 5);
    assert_eq!(summary.usable_rate(), Some(0.6));
    assert_eq!(summary.partial_reasons["too_few"], 2);
    assert_eq!(summary.partial_reasons["unmatched"], 1);
    assert_eq!(summary.failure_reasons["empty"], 1);
    assert_eq!(summary.failure_reasons["no_items"], 1);
}

#[test]
fn results_serialize_with_their_kinds() {
    let failed = top("", 3, REVIEW);
    let json = serde_json::to_value(&failed).unwrap();
    assert_eq!(json["status"]["kind"], "failed");
    assert_eq!(json["status"]["reason"]["kind"], "empty");
    assert_eq!(json["format"], serde_json::json!({"kind": "top_k", "k": 3}));
    let back: ParsedExplanation = serde_json::from_value(json).unwrap();
    assert_eq!(back, failed);

    let reasons = [
        PartialReason::Truncated,
        PartialReason::Unmatched { count: 1 },
        PartialReason::Repeated { count: 1 },
        PartialReason::Clamped { count: 1 },
        PartialReason::Unscored { count: 1 },
        PartialReason::TooFew { asked: 1, given: 0 },
        PartialReason::TooMany { asked: 1, given: 2 },
        PartialReason::Missing { count: 1 },
    ];
    for r in reasons {
        assert_eq!(serde_json::to_value(&r).unwrap()["kind"], r.kind());
    }
    let failures = [
        FailReason::Empty,
        FailReason::NoInputWords,
        FailReason::NoWordsRequested,
        FailReason::EchoOnly,
        FailReason::NoItems,
        FailReason::NothingAligned { items: 1 },
        FailReason::NoScores,
    ];
    for r in failures {
        assert_eq!(serde_json::to_value(&r).unwrap()["kind"], r.kind());
    }
}

// ---- arbitrary text ----------------------------------------------------------------------

/// Fragments random answers are made of: JSON syntax, separators, numbers, quotes, input
/// words, unicode.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    ":",
    ",",
    " ",
    "\n",
    "-",
    "−",
    "0.9",
    "-1",
    "1e999",
    ".",
    "(",
    ")",
    "great",
    "boring",
    "The",
    "not good",
    "N/A",
    "null",
    "\\",
    "é",
    "😴",
    "’",
    "**",
    "1.",
    "and",
    "=",
    "|",
    "are",
    "\u{0301}",
    "\"great\"",
    "{\"w\":",
    "[[",
];

#[test]
fn arbitrary_answers_never_panic_and_keep_the_invariants() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: a fixed, dependency-free stream of choices.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let len = (next() % 24) as usize;
        let raw: String = (0..len)
            .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
            .collect();
        top(&raw, 1 + (next() % 4) as usize, REVIEW);
        scored(&raw, REVIEW);
    }
}

#[test]
fn every_cut_of_a_real_answer_parses_without_panicking() {
    let answers = [
        r#"Sure! ```json
{"The": 0.0, "acting": 0.6, "great": "0.9", "plot": [-0.3], "boring": -1.5}
``` These scores show the review is mixed."#,
        "Here are the 3 most important words:\n1. **Great** - positive\n2. “boring” (negative)\n3. plot: neutral",
    ];
    for raw in answers {
        for (cut, _) in raw.char_indices() {
            top(&raw[..cut], 3, REVIEW);
            scored(&raw[..cut], REVIEW);
        }
    }
}

#[test]
fn deeply_nested_and_long_answers_are_handled() {
    let deep = "[".repeat(10_000);
    assert!(!top(&deep, 3, REVIEW).is_usable());
    let deep_closed = format!("{}\"great\"{}", "[".repeat(500), "]".repeat(500));
    top(&deep_closed, 3, REVIEW);
    let long = "great: 0.9, ".repeat(5_000);
    let p = scored(&long, REVIEW);
    assert_eq!(p.scores[3], 0.9);
    assert_eq!(reasons(&p)[0], PartialReason::Repeated { count: 4_999 });
}
