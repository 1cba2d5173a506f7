//! `steptune ifeval`: generation with a model's chat template, reports and candidate tables (placeholder).
