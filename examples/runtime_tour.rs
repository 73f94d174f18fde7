//! A tour of the instrumented runtime on the default model: one captured forward pass, a forked
//! KV cache, and teacher-forced scoring. Run with `cargo run --release -p glassbox --example runtime_tour`.

use glassbox::{Capture, Fetch, Hook, LoadOptions, NoProgress, Prompt, Row, load_model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = load_model(
        glassbox::DEFAULT_MODEL,
        LoadOptions::default(),
        Fetch::IfMissing,
        &NoProgress,
    )?;
    let prompt = Prompt::user("What is the capital of France?").tokens(&model)?;

    // One pass: next-token logits and layer 3's attention pattern.
    let out = model
        .forward(
            vec![Row::tokens(prompt.clone())],
            &Capture::none().with(Hook::AttnPattern(3)),
        )?
        .remove(0);
    let next = glassbox::runtime::argmax(out.logits.as_ref().expect("last-token logits").at(0));
    let pattern = &out.activations[&Hook::AttnPattern(3)];
    println!(
        "next token: {:?}; layer 3 pattern shape {:?}",
        model.tokenizer().decode(&[next])?,
        pattern.shape
    );

    // A prefix computed once and continued two ways.
    let split = prompt.len() - 4;
    let prefix = model
        .forward(vec![Row::tokens(prompt[..split].to_vec())], &Capture::kv())?
        .remove(0);
    let cache = prefix.kv.expect("asked for the cache");
    let rows = vec![
        Row::tokens(prompt[split..].to_vec()).with_past(cache.clone()),
        Row::tokens(model.tokenizer().encode("Why?<|im_end|>\n", false)?.ids).with_past(cache),
    ];
    let forks = model.forward(rows, &Capture::none())?;
    println!(
        "forked {} continuations from one {split}-token prefix",
        forks.len()
    );

    // The log-probability of a fixed answer, in one pass.
    let answer = model
        .tokenizer()
        .encode("The capital of France is Paris.", false)?
        .ids;
    let score = model.score(&prompt, &answer)?;
    println!(
        "log p(answer) = {:.3} over {} tokens",
        score.total(),
        answer.len()
    );
    Ok(())
}
