"""agentplex: an MCP-native agent mesh."""
