//! "Build, then these sinks": every command that makes images reads the configuration of each,
//! checks every destination before any build work, builds all the images (one cargo run), then
//! hands each image to its sinks in turn.

use anyhow::Result;

use crate::build::pipeline::{self, BuildRequest, Built, Configured};
use crate::sink::{Delivered, Sink};
use crate::util::reporter::Reporter;

/// One image built and what each of its sinks did with it, in the sinks' order.
pub struct Made {
    pub built: Built,
    pub delivered: Vec<(&'static str, Delivered)>,
}

/// Builds every selected image and delivers each to the sinks that `sinks` chooses from its
/// configuration. Returns one [`Made`] per image, in the order of the selection.
pub fn build_and_deliver(
    req: &BuildRequest,
    mut sinks: impl FnMut(&Configured) -> Result<Vec<Box<dyn Sink>>>,
    report: &Reporter,
) -> Result<Vec<Made>> {
    let confs = pipeline::configure(req)?;
    let sinks: Vec<Vec<Box<dyn Sink>>> = confs.iter().map(&mut sinks).collect::<Result<_>>()?;
    for sink in sinks.iter().flatten() {
        sink.check()?;
    }
    let built = pipeline::build(req, confs, report)?;
    let mut made = Vec::new();
    for (built, sinks) in built.into_iter().zip(sinks) {
        let images = built.images();
        let mut delivered = Vec::new();
        for sink in &sinks {
            delivered.push((sink.kind(), sink.deliver(&built.store, &images, report)?));
        }
        made.push(Made { built, delivered });
    }
    Ok(made)
}
