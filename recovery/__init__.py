"""The recovery core: error classification, transactional state changes, the notification
outbox, inventory reconciliation and workflow recovery. Independent of aiogram where it can be.
"""
