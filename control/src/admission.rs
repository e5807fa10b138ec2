//! Room membership and admission decisions, sans-IO.
