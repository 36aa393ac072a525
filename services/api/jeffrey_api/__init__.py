"""The HTTP gateway: validates, stores, enqueues. It never imports worker code: tasks are sent by name."""
