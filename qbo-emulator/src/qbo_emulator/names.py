"""Word lists for generated customers, items and addresses."""

from __future__ import annotations

GIVEN_NAMES = (
    "Amy", "Bill", "Carla", "Dylan", "Elena", "Farid", "Grace", "Hiro", "Ines",
    "Jonas", "Kemi", "Luis", "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa",
    "Sami", "Tara",
)
FAMILY_NAMES = (
    "Andersen", "Baker", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad",
    "Ito", "Jansen", "Kowalski", "Lopez", "Muller", "Nguyen", "Okafor", "Patel",
    "Quist", "Rossi", "Silva", "Tanaka",
)
COMPANY_KINDS = (
    "Landscaping", "Bakery", "Auto Repair", "Dental", "Consulting", "Hardware",
    "Florist", "Print Shop", "Cafe", "Yoga Studio",
)
STREETS = (
    "Willow Rd", "Ocean View Rd", "Main St", "Oak Ave", "Pine St", "Elm Ct",
    "Cedar Ln", "Maple Dr", "Birch Way", "Harbor Blvd",
)
CITIES = (
    ("Menlo Park", "CA", "94304"), ("Palo Alto", "CA", "94301"),
    ("San Jose", "CA", "95112"), ("Oakland", "CA", "94607"),
    ("Bayshore", "CA", "94326"), ("Sunnyvale", "CA", "94086"),
)
ITEM_ADJECTIVES = (
    "Rock", "Garden", "Copper", "Deluxe", "Weekly", "Spring", "Granite", "Solar",
    "Cedar", "Premium", "Compact", "Rustic",
)
ITEM_NOUNS = (
    "Fountain", "Pump", "Lighting", "Pipes", "Heads", "Sod", "Soil", "Trimming",
    "Design", "Installation", "Hours", "Mulch", "Planter", "Hose",
)
ITEM_TYPES = ("Service", "Inventory", "NonInventory")
