"""Alerting: rules, the leased evaluator, alert state, silences and notifiers."""
