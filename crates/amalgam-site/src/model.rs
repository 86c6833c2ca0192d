//! The global model chain as every site computes it: model_{r+1} from model_r and the
//! published, decoded sum, with a fixed operation order, and its digest over the canonical
//! little-endian f32 bytes. The implementation is the consortium crate's
//! [`amalgam_consortium::global_model`], the one the aggregator runs too; a site checks the
//! model the aggregator serves against its own.

pub use amalgam_consortium::global_model::{
    AggregationWeights, ModelError, fedavg_step, model_bytes, model_digest, model_from_bytes,
    next_model,
};
