"""The HTTP gateway: validates, stores, enqueues. It never imports jeffrey_worker."""
