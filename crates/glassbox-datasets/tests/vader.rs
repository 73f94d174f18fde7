//! The readers on the committed subset of the real VADER files (see fixtures/NOTICE.md).

use std::path::{Path, PathBuf};

use glassbox_datasets::{
    DatasetError, Lexicon, POLAR_MIN_ABS_RATING, Polarity, RATIONALE_MIN_ABS_VALENCE, polar,
    read_snippets,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn movie_snippets_parse_as_published() {
    let snippets = read_snippets(fixture("movieReviewSnippets_GroundTruth.txt")).unwrap();
    assert_eq!(snippets.len(), 40);
    assert_eq!(snippets[2].id, "3");
    assert_eq!(snippets[2].rating, -0.6);
    assert_eq!(snippets[2].text, "Effective but too tepid biopic");
    let imax = snippets.iter().find(|s| s.id == "93").unwrap();
    assert!(imax.text.contains("the clichés disappear"), "{}", imax.text);
    let last = snippets.last().unwrap();
    assert_eq!(last.id, "10605", "the last line has no line end");
    assert!(last.text.ends_with("zero."), "no \\r left: {:?}", last.text);
}

#[test]
fn polar_snippets_are_the_clearly_rated_ones() {
    let snippets = read_snippets(fixture("movieReviewSnippets_GroundTruth.txt")).unwrap();
    let polar = polar(&snippets, POLAR_MIN_ABS_RATING);
    let count = |p| polar.iter().filter(|l| l.polarity == p).count();
    assert_eq!(
        (count(Polarity::Positive), count(Polarity::Negative)),
        (16, 10)
    );
    let polarity_of = |id: &str| {
        polar
            .iter()
            .find(|l| l.snippet.id == id)
            .map(|l| l.polarity)
    };
    assert_eq!(polarity_of("152"), Some(Polarity::Positive), "exactly 1.5");
    assert_eq!(
        polarity_of("5435"),
        Some(Polarity::Negative),
        "exactly -1.5"
    );
    assert_eq!(polarity_of("4"), None, "1.47 is not clear enough");
    assert_eq!(polarity_of("5336"), None, "-1.43 is not clear enough");
}

#[test]
fn lexicon_lookups_follow_vader() {
    let lexicon = Lexicon::read(fixture("vader_lexicon.txt")).unwrap();
    assert_eq!(lexicon.len(), 239, "253 lines, 14 tokens written twice");
    assert_eq!(lexicon.valence("good"), Some(1.9));
    assert_eq!(lexicon.valence("Great"), Some(3.1));
    assert_eq!(lexicon.valence("horrible,''"), Some(-2.5));
    assert_eq!(
        lexicon.valence("lol"),
        Some(1.8),
        "the later of two entries"
    );
    assert_eq!(
        lexicon.valence("( '}{' )"),
        Some(1.6),
        "tokens may hold spaces"
    );
    assert_eq!(
        lexicon.valence(":D"),
        Some(2.3),
        "looked up as :d, as VADER does"
    );
    assert_eq!(
        lexicon.valence(":Þ"),
        None,
        "its lower-case :þ is not an entry"
    );
    assert_eq!(
        lexicon.valence("%-)"),
        Some(-1.5),
        "an emoticon, not stripped"
    );
    assert_eq!(lexicon.valence("Wasabi"), None);
}

#[test]
fn rationale_marks_the_strong_words_of_a_snippet() {
    let lexicon = Lexicon::read(fixture("vader_lexicon.txt")).unwrap();
    let snippets = read_snippets(fixture("movieReviewSnippets_GroundTruth.txt")).unwrap();
    let text = &snippets.iter().find(|s| s.id == "4").unwrap().text;
    let words: Vec<&str> = text.split_whitespace().collect();
    let marked: Vec<&str> = words
        .iter()
        .zip(lexicon.rationale(&words, RATIONALE_MIN_ABS_VALENCE))
        .filter_map(|(w, m)| m.then_some(*w))
        .collect();
    // "like" is exactly 1.5, "fun," is fun at 2.3, "good" 1.9.
    assert_eq!(marked, ["like", "fun,", "good"], "{text}");
    assert_eq!(
        lexicon.rationale(&["bad", "luckiest", "ignorant"], RATIONALE_MIN_ABS_VALENCE),
        [true, true, false],
        "ignorant is -1.1"
    );
}

/// Writes `lines` (LF-separated) to a file in a fresh folder.
fn file_with(lines: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.txt");
    std::fs::write(&path, lines).unwrap();
    (dir, path)
}

#[test]
fn bad_lines_name_the_file_and_line() {
    let (_dir, path) = file_with(b"1\t2.0\tfine\r\n\r\n3\t2,5\tcomma decimal\r\n");
    let err = read_snippets(&path).unwrap_err();
    assert!(
        matches!(err, DatasetError::BadLine { line: 3, .. }),
        "{err}"
    );
    assert!(err.is_input_error());
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:3: ", path.display())), "{msg}");
    assert!(msg.contains("`2,5`"), "{msg}");

    let (_dir, path) = file_with(b"1\t2.0\tfine\n2\t1.0\tnot \xff utf-8\n");
    let err = read_snippets(&path).unwrap_err();
    assert!(err.to_string().contains(":2: not UTF-8"), "{err}");

    let (_dir, path) = file_with(b"good\t1.9\t0.9434\t[2, 1]\nbad\t-2.5\n");
    let err = Lexicon::read(&path).unwrap_err();
    assert!(err.to_string().contains(":2: expected 4"), "{err}");

    let ratings = fixture("vader_lexicon.txt");
    let err = read_snippets(&ratings).unwrap_err();
    assert!(
        err.to_string()
            .contains(":1: expected 3 tab-separated fields"),
        "the lexicon is not a snippet file: {err}"
    );

    let err = read_snippets(fixture("missing.txt")).unwrap_err();
    assert!(matches!(err, DatasetError::NotFound { .. }), "{err}");
    assert!(err.is_input_error());
}
