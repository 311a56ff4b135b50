"""The web dashboard the control plane serves at /dashboard/: plain HTML, JavaScript and CSS in
`static/`, with no build step (routes in gossamer.control.api.dashboard)."""
