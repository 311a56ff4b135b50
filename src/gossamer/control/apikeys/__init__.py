"""API keys and shared budgets of ApiProducts: what gateways need from the control plane."""
