"""Reading landing files (OTLP, plain-text and JSON logs, CDEvents, JUnit, Backstage catalog) into raw frames."""
