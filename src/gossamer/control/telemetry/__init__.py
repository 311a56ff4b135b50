"""The control plane's built-in telemetry: the proxies' metrics and spans, kept for a bounded
window in memory, and the golden metrics, service graph, traces and taps answered from them."""
