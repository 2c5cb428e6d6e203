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
# Explicit feedback and engagement (optional columns): a 1-5 star rating (rating events, optionally
# reviews), the review's text (review events), seconds spent on the page (views).
RATING = "rating"
REVIEW_TEXT = "review_text"
DWELL_SECONDS = "dwell_seconds"
# Context of the event (optional): device (mobile, desktop, app, ...), channel (the referral source:
# search, social, email, direct, paid) and landing page (a page type or category).
DEVICE = "device"
CHANNEL = "channel"
LANDING_PAGE = "landing_page"
CONTEXT_COLUMNS = (DEVICE, CHANNEL, LANDING_PAGE)

EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, EVENT_TIME, QUANTITY, PRICE, ORDER_ID, SESSION_ID,
                 RATING, REVIEW_TEXT, DWELL_SECONDS, DEVICE, CHANNEL, LANDING_PAGE)
REQUIRED_EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, EVENT_TIME)

VIEW, ADD_TO_CART, PURCHASE, RETURN = "view", "add_to_cart", "purchase", "return"
ADD_TO_WISHLIST, RATING_EVENT, REVIEW_EVENT = "add_to_wishlist", "rating", "review"
EVENT_TYPES = (VIEW, ADD_TO_CART, PURCHASE, RETURN, ADD_TO_WISHLIST, RATING_EVENT, REVIEW_EVENT)
RATING_MIN, RATING_MAX = 1.0, 5.0

# Item catalog and users columns.
ITEM_COLUMNS = ("item_id", "title", "description", "category", "brand", "price", "in_stock", "active")
USER_COLUMNS = ("user_id", "country", "signup_date", "consent_personalization", "consent_email", "interests")

# Warehouse tables published per ds.
T_USER_RECS = "user_recommendations"
T_SIMILAR = "similar_items"
T_MODEL_RUNS = "model_runs"

SURFACE_FOR_YOU = "for_you"
