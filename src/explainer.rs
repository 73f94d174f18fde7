//! [`Explainer`]: token-, word- and sentence-level attribution from the library, the same as
//! `glassbox attribute` — a small builder over [`AttributeRequest`].

use glassbox_attribution::attribute::{
    AnswerSpec, AttributeRequest, InputTemplate, MethodOptions, PromptFormat, TargetSpec,
    TokenMethod, UnitLevel, attribute,
};
use glassbox_attribution::{AttributionError, Perturbation};
use glassbox_report::{Aggregation, AttributeReport};
use glassbox_runtime::Model;

/// Explains a model's output in terms of its input text.
///
/// ```no_run
/// # use glassbox::{Explainer, Fetch, LoadOptions, NoProgress, load_model};
/// let model = load_model("smollm2-135m-instruct", LoadOptions::default(), Fetch::IfMissing, &NoProgress)?;
/// let report = Explainer::new(&model)
///     .method("kernel")?
///     .target("contrast: Paris, London")?
///     .explain("The capital of France is")?;
/// println!("{}", glassbox::report::verbalize(&report.attribution, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Explainer<'m> {
    model: &'m Model,
    request: AttributeRequest,
}

impl<'m> Explainer<'m> {
    /// Integrated gradients of the next token's log-probability, per word, on the raw text.
    pub fn new(model: &'m Model) -> Self {
        Self {
            model,
            request: AttributeRequest {
                input: String::new(),
                template: InputTemplate::default(),
                answer: AnswerSpec::NextToken,
                target: TargetSpec::LogProb,
                method: TokenMethod::parse("ig", &MethodOptions::default())
                    .expect("a built-in method"),
                unit: UnitLevel::Word,
                format: PromptFormat::Raw,
                system: None,
                perturbation: Perturbation::Delete,
                aggregate: Aggregation::Sum,
                seed: 0,
            },
        }
    }

    /// A method by name (`glassbox list methods`) with default settings.
    pub fn method(self, name: &str) -> Result<Self, AttributionError> {
        self.method_with(name, &MethodOptions::default())
    }

    /// A method by name with settings (steps, baseline, samples, layer, ...).
    pub fn method_with(
        mut self,
        name: &str,
        options: &MethodOptions,
    ) -> Result<Self, AttributionError> {
        self.request.method = TokenMethod::parse(name, options)?;
        Ok(self)
    }

    /// `prob`, `logprob`, `logit`, `contrast:A,B` or `label:A,B,...`.
    pub fn target(mut self, spec: &str) -> Result<Self, AttributionError> {
        self.request.target = TargetSpec::parse(spec)?;
        Ok(self)
    }

    /// `token`, `word`, `sentence` or `spans:A-B,...`.
    pub fn unit(mut self, spec: &str) -> Result<Self, AttributionError> {
        self.request.unit = UnitLevel::parse(spec)?;
        Ok(self)
    }

    /// Explain this continuation (teacher-forced) instead of the next token.
    pub fn continuation(mut self, text: impl Into<String>) -> Self {
        self.request.answer = AnswerSpec::Given(text.into());
        self
    }

    /// Explain the model's greedy continuation of up to `max_tokens` tokens.
    pub fn generate(mut self, max_tokens: usize) -> Self {
        self.request.answer = AnswerSpec::Generate(max_tokens);
        self
    }

    /// Put the input in the model's chat template as the user's turn.
    pub fn chat(mut self, system: Option<String>) -> Self {
        self.request.format = PromptFormat::Chat;
        self.request.system = system;
        self
    }

    pub fn perturbation(mut self, perturbation: Perturbation) -> Self {
        self.request.perturbation = perturbation;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.request.seed = seed;
        self
    }

    /// Attributes the output for `input`.
    pub fn explain(&self, input: &str) -> Result<AttributeReport, AttributionError> {
        let request = AttributeRequest {
            input: input.to_string(),
            template: InputTemplate::default(),
            ..self.request.clone()
        };
        attribute(self.model, &request)
    }
}
