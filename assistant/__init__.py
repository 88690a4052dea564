"""Everything about the conversation: query state, turn parsing (LLM or rules), sessions, UI and CLI.

Depends on `retrieval`; knows nothing of FAISS or torch.
"""
