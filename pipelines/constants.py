"""Names shared by every step: columns, event types, table names, defaults.

One place for these so a rename touches one line (GUIDE practice 3).
"""

# Canonical event columns (docs/data-contract.md).
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
QUANTITY = "quantity"
PRICE = "price"
ORDER_ID = "order_id"
SESSION_ID = "session_id"
EVENT_DATE = "event_date"  # landing partition key, the UTC date of event_time

EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, EVENT_TIME, QUANTITY, PRICE, ORDER_ID, SESSION_ID)
REQUIRED_EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, EVENT_TIME)

VIEW, ADD_TO_CART, PURCHASE, RETURN = "view", "add_to_cart", "purchase", "return"
EVENT_TYPES = (VIEW, ADD_TO_CART, PURCHASE, RETURN)

# Item catalog and users columns.
ITEM_COLUMNS = ("item_id", "title", "description", "category", "brand", "price", "in_stock", "active")
USER_COLUMNS = ("user_id", "country", "signup_date", "consent_personalization", "consent_email", "interests")

# Warehouse tables published per ds.
T_USER_RECS = "user_recommendations"
T_SIMILAR = "similar_items"
T_MODEL_RUNS = "model_runs"

SURFACE_FOR_YOU = "for_you"
