//! Wrapping an existing `generate` call, tower-style: a [`GuardLayer`] turns any generator into a [`Guarded`] one
//! whose answers have been through the [`Protector`]. The generator itself is not touched.

use std::sync::Arc;

use crate::error::Error;
use crate::image::Image;
use crate::protector::stream::{Flow, StreamConfig, StreamOutcome};
use crate::protector::{GuardOutcome, Protector};

/// A multimodal generate call: an optional image and a prompt in, a response out.
pub trait Generate {
    /// The generator's own error.
    type Error;
    /// Produces the model's response.
    fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<String, Self::Error>;
}

impl<F, E> Generate for F
where
    F: Fn(Option<&Image>, &str) -> Result<String, E>,
{
    type Error = E;
    fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<String, E> {
        self(image, prompt)
    }
}

/// A multimodal generate call that streams: it hands each piece of the answer (a token's text) to `on_piece` as it
/// is produced, and stops early when `on_piece` returns [`Flow::Stop`].
///
/// ```
/// use mllm_protector::{Flow, Image};
/// use mllm_protector::protector::GenerateStream;
///
/// /// Streams a canned answer word by word.
/// struct Canned(&'static str);
/// impl GenerateStream for Canned {
///     type Error = std::convert::Infallible;
///     fn generate_stream(
///         &self,
///         _image: Option<&Image>,
///         _prompt: &str,
///         on_piece: &mut dyn FnMut(&str) -> Flow,
///     ) -> Result<(), Self::Error> {
///         for word in self.0.split_inclusive(' ') {
///             if on_piece(word) == Flow::Stop {
///                 break;
///             }
///         }
///         Ok(())
///     }
/// }
/// let mut seen = String::new();
/// Canned("one two three").generate_stream(None, "count", &mut |p| { seen.push_str(p); Flow::Continue })?;
/// assert_eq!(seen, "one two three");
/// # Ok::<(), std::convert::Infallible>(())
/// ```
pub trait GenerateStream {
    /// The generator's own error.
    type Error;
    /// Generates, handing each piece to `on_piece`, and returns when the answer is finished or `on_piece` says stop.
    fn generate_stream(
        &self,
        image: Option<&Image>,
        prompt: &str,
        on_piece: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<(), Self::Error>;
}

/// Error of a guarded call: the generator's, or the guard's (bad input).
#[derive(Debug, thiserror::Error)]
pub enum GuardedError<E> {
    /// The wrapped generator failed; nothing was guarded.
    #[error("generate failed: {0}")]
    Generate(E),
    /// The guard refused the input.
    #[error(transparent)]
    Guard(#[from] Error),
}

/// Makes [`Guarded`] generators that share one protector.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    protector: Arc<Protector>,
}

impl GuardLayer {
    /// A layer around `protector`.
    pub fn new(protector: Arc<Protector>) -> Self {
        GuardLayer { protector }
    }

    /// Wraps `inner`.
    pub fn layer<G>(&self, inner: G) -> Guarded<G> {
        Guarded {
            inner,
            protector: Arc::clone(&self.protector),
        }
    }
}

/// A generator whose every response goes through the protector.
///
/// ```no_run
/// use std::sync::Arc;
/// use mllm_protector::{GuardLayer, Image, Protector};
///
/// // Your existing call, unchanged:
/// let llava = |_image: Option<&Image>, prompt: &str| -> Result<String, std::io::Error> {
///     Ok(format!("(the model's answer to {prompt})"))
/// };
/// let guarded = GuardLayer::new(Arc::new(Protector::new()?)).layer(llava);
/// let outcome = guarded.generate(None, "Describe this picture")?;
/// println!("{}", outcome.response);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Guarded<G> {
    inner: G,
    protector: Arc<Protector>,
}

impl<G: Generate> Guarded<G> {
    /// Calls the wrapped generator, then guards its response.
    pub fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<GuardOutcome, GuardedError<G::Error>> {
        let response = self.inner.generate(image, prompt).map_err(GuardedError::Generate)?;
        Ok(self.protector.guard(image, prompt, &response)?)
    }
}

impl<G> Guarded<G> {
    /// The wrapped generator.
    pub fn inner(&self) -> &G {
        &self.inner
    }
}

impl<G: GenerateStream> Guarded<G> {
    /// Streams the wrapped generator's answer through a [`StreamGuard`](crate::StreamGuard) with the default
    /// [`StreamConfig`]: `on_release` receives the text as it passes the checks, the generator is stopped when the
    /// answer turns harmful, and the outcome's `response` (when changed) is the replacement to show after what was
    /// released.
    pub fn generate_stream(
        &self,
        image: Option<&Image>,
        prompt: &str,
        on_release: impl FnMut(&str),
    ) -> Result<StreamOutcome, GuardedError<G::Error>> {
        self.generate_stream_with(image, prompt, StreamConfig::default(), on_release)
    }

    /// [`generate_stream`](Self::generate_stream) with its own stream settings.
    pub fn generate_stream_with(
        &self,
        image: Option<&Image>,
        prompt: &str,
        config: StreamConfig,
        mut on_release: impl FnMut(&str),
    ) -> Result<StreamOutcome, GuardedError<G::Error>> {
        let mut guard = self.protector.stream_with(image, prompt, config)?;
        let mut failure: Option<Error> = None;
        self.inner
            .generate_stream(image, prompt, &mut |piece| match guard.push(piece) {
                Ok(step) => {
                    if !step.release.is_empty() {
                        on_release(&step.release);
                    }
                    step.flow
                }
                Err(e) => {
                    failure = Some(e);
                    Flow::Stop
                }
            })
            .map_err(GuardedError::Generate)?;
        if let Some(e) = failure {
            return Err(GuardedError::Guard(e));
        }
        let end = guard.finish()?;
        if !end.rest.is_empty() {
            on_release(&end.rest);
        }
        Ok(end)
    }
}
