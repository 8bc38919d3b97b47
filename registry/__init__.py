"""The shared registry service: agent inventory, trace registry, approvals queue."""
