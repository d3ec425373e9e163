"""Language-model proposers behind one small protocol (:mod:`offline_agent.llm.base`)."""
