"""The coordinator service: configuration, schedules, report runs, history, changes, reports, alerts, metrics."""
