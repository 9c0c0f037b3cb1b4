//! Processor for ultrasound RF event chunks (payload format 4).
//! Placeholder until the stream is implemented: it counts payloads and drops them under a
//! named reason, so nothing is lost silently.

use super::{StreamContext, StreamProcessor, StreamReport};

/// Settings from the run configuration.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsSettings {}

struct Unimplemented {
    source_id: u32,
    payloads: u64,
}

/// Makes the processor for one stream.
pub fn new_processor(ctx: StreamContext) -> anyhow::Result<Box<dyn StreamProcessor>> {
    Ok(Box::new(Unimplemented {
        source_id: ctx.source_id,
        payloads: 0,
    }))
}

impl StreamProcessor for Unimplemented {
    fn payload(&mut self, _payload: &[u8]) -> anyhow::Result<()> {
        self.payloads += 1;
        Ok(())
    }
    fn control(&mut self, _payload: &[u8]) -> anyhow::Result<()> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> anyhow::Result<StreamReport> {
        let mut report = StreamReport::default();
        report
            .losses
            .add("unsupported_stream_packets", self.payloads);
        report
            .counts
            .insert(format!("stream.{}.packets", self.source_id), self.payloads);
        Ok(report)
    }
}
