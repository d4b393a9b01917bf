"""L6: agents: kinds, activation, mailboxes, dispatch and references."""
