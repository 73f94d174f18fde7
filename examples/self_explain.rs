//! The model explains its own sentiment prediction, and the explanation is held to what the
//! model does: comprehensiveness and decision flip of the self-explanation against word
//! occlusion on the same prompt and target, and how far the two agree. Run with
//! `cargo run --release -p glassbox --example self_explain`.

use glassbox::attribution::Perturbation;
use glassbox::attribution::attribute::{AttributeRequest, MethodOptions, TokenMethod, attribute};
use glassbox::eval::MetricRequest;
use glassbox::eval::agreement::agreement;
use glassbox::evaluate::{EvaluateOptions, default_target, evaluate};
use glassbox::selfexplain::{Protocol, Task, classification_request, self_explain};
use glassbox::{Fetch, LoadOptions, NoProgress, load_model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = load_model(
        glassbox::DEFAULT_MODEL,
        LoadOptions::default(),
        Fetch::IfMissing,
        &NoProgress,
    )?;
    let review = "A tedious, overlong film with a few good jokes.";
    let task = Task::load("sentiment")?;
    let (_, framing) = task.framing(None)?;
    let protocol = Protocol::load("topk-predict-then-explain")?;
    let own = self_explain(&model, &task, framing, &protocol, review, 96)?;
    let c = &own.classification;
    println!(
        "prediction: {} (p = {:.3}); the model's answer: {:?} ({})",
        task.label_names[c.label],
        c.probs[c.label],
        own.parsed.raw,
        serde_json::to_string(&own.parsed.status)?
    );
    let occlusion = attribute(
        &model,
        &AttributeRequest {
            method: TokenMethod::parse("loo", &MethodOptions::default())?,
            ..classification_request(framing, review)?
        },
    )?;
    let options = EvaluateOptions {
        metrics: ["comprehensiveness:cumulative", "decision_flip:frac"]
            .iter()
            .map(|m| MetricRequest::parse(m))
            .collect::<Result<_, _>>()?,
        unit: None,
        perturbation: Perturbation::Delete,
        target: None,
        seed: 0,
    };
    for report in [&own.report, &occlusion] {
        let e = evaluate(&model, report, &options)?;
        let values: Vec<String> = e
            .results
            .iter()
            .map(|r| format!("{} {:?}", r.spec, r.value))
            .collect();
        println!("{:>18}: {}", e.explainer, values.join(", "));
    }
    let t = default_target(&occlusion);
    let agree = agreement(
        &own.report.attribution.scores[t],
        &occlusion.attribution.scores[t],
        None,
    )?;
    println!("Spearman with occlusion: {:?}", agree.spearman);
    Ok(())
}
