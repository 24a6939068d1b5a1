"""Parser and executor for QBO's query language.

Grammar accepted (keywords and property names in any case, entity names in
their exact case)::

    SELECT * | COUNT(*) FROM Entity
        [WHERE cond [AND cond]...]
        [ORDERBY | ORDER BY Property [ASC | DESC]]
        [STARTPOSITION n] [MAXRESULTS n]

    cond := Property (= | < | > | <= | >=) value
          | Property IN (value [, value]...)
          | Property LIKE 'text with % wildcards'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qbo_emulator.company import Company

MAX_RESULTS_LIMIT = 1000
DEFAULT_MAX_RESULTS = 100


class QueryError(Exception):
    """A query QBO would reject, with its QBO error code and texts."""

    def __init__(self, code: str, message: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.message = message
        self.detail = detail


def parser_error(detail: str) -> QueryError:
    """Return a 4000 QueryParserError."""
    return QueryError("4000", "Error parsing query", f"QueryParserError: {detail}")


def validation_error(detail: str) -> QueryError:
    """Return a 4001 QueryValidationError."""
    return QueryError("4001", "Invalid query", f"QueryValidationError: {detail}")


# --------------------------------------------------------------- properties
@dataclass(frozen=True)
class Property:
    """A filterable property of an entity and what may be done with it."""

    name: str
    kind: str  # "id", "datetime", "date", "string", "number", "bool", "ref"
    column: str | None = None
    sortable: bool = True

    @property
    def operators(self) -> frozenset[str]:
        """Return the operators QBO accepts on this property."""
        if self.kind in {"id", "ref", "bool"}:
            return frozenset({"=", "IN"})
        if self.kind == "string":
            return frozenset({"=", "IN", "LIKE"})
        return frozenset({"=", "<", ">", "<=", ">=", "IN"})


_COMMON = (
    # NOTE: ORDERBY Id is rejected because no primary source lists Id as sortable.
    Property("Id", "id", column="ids", sortable=False),
    Property("MetaData.CreateTime", "datetime", column="created"),
    Property("MetaData.LastUpdatedTime", "datetime", column="updated"),
)
PROPERTIES: dict[str, dict[str, Property]] = {}
for _entity, _extra in {
    "Invoice": (
        Property("DocNumber", "string"), Property("TxnDate", "date"),
        Property("DueDate", "date"), Property("CustomerRef", "ref", sortable=False),
        Property("Balance", "number"),
    ),
    "Customer": (
        Property("DisplayName", "string"), Property("GivenName", "string"),
        Property("FamilyName", "string"), Property("CompanyName", "string"),
        Property("Active", "bool", column="active", sortable=False),
        Property("Balance", "number"),
    ),
    "Item": (
        Property("Name", "string"),
        Property("Active", "bool", column="active", sortable=False),
        Property("Type", "string"), Property("Sku", "string"),
    ),
}.items():
    PROPERTIES[_entity] = {p.name.lower(): p for p in (*_COMMON, *_extra)}


# ------------------------------------------------------------------ tokens
_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:\\.|[^'\\])*')
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),*])
  | (?P<word>[A-Za-z_][\w.]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class Token:
    """One lexical token and its 1-based column."""

    kind: str
    text: str
    column: int

    @property
    def upper(self) -> str:
        """Return the token text in upper case, for keyword matching."""
        return self.text.upper()


def tokenize(text: str) -> list[Token]:
    """Split a query into tokens.

    Raises:
        QueryError: an unterminated string or a character QBO does not accept.
    """
    tokens: list[Token] = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup or "other"
        value = match.group()
        if kind == "space":
            continue
        if kind == "other":
            if value == "'":
                raise parser_error(
                    f'Lexical error at line 1, column {match.start() + 1}. '
                    "Encountered: <EOF> inside a quoted string"
                )
            raise parser_error(
                f'Lexical error at line 1, column {match.start() + 1}. '
                f'Encountered: "{value}"'
            )
        tokens.append(Token(kind, value, match.start() + 1))
    return tokens


# ------------------------------------------------------------------- model
@dataclass
class Condition:
    """One comparison of a WHERE clause."""

    prop: Property
    operator: str
    values: list[Any]


@dataclass
class Query:
    """A parsed and validated query."""

    entity: str
    count: bool
    conditions: list[Condition] = field(default_factory=list)
    order_by: Property | None = None
    descending: bool = False
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS


class _Parser:
    def __init__(self, text: str, company: Company,
                 max_start_position: int | None) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.position = 0
        self.company = company
        self.max_start_position = max_start_position

    # token helpers
    def peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def advance(self) -> Token:
        token = self.peek()
        if token is None:
            raise parser_error("Encountered \"<EOF>\" at end of query.")
        self.position += 1
        return token

    def fail(self, token: Token | None, expected: str) -> QueryError:
        if token is None:
            return parser_error(f'Encountered "<EOF>" at line 1. Was expecting: {expected}')
        return parser_error(
            f'Encountered "{token.text}" at line 1, column {token.column}. '
            f"Was expecting: {expected}"
        )

    def expect_keyword(self, keyword: str) -> Token:
        token = self.peek()
        if token is None or token.kind != "word" or token.upper != keyword:
            raise self.fail(token, f'"{keyword}"')
        return self.advance()

    def at_keyword(self, *keywords: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.upper in keywords

    def expect_punct(self, char: str) -> Token:
        token = self.peek()
        if token is None or token.text != char:
            raise self.fail(token, f'"{char}"')
        return self.advance()

    # grammar
    def parse(self) -> Query:
        self.expect_keyword("SELECT")
        count = False
        token = self.peek()
        if token is not None and token.text == "*":
            self.advance()
        elif self.at_keyword("COUNT"):
            self.advance()
            self.expect_punct("(")
            self.expect_punct("*")
            self.expect_punct(")")
            count = True
        else:
            # QBO has no projections: SELECT Id, Name ... is rejected here.
            raise self.fail(token, '"*" or "COUNT(*)"')

        self.expect_keyword("FROM")
        entity_token = self.advance()
        if entity_token.kind != "word":
            raise self.fail(entity_token, "<IDENTIFIER>")
        entity = self._entity(entity_token)
        query = Query(entity=entity, count=count)

        if self.at_keyword("WHERE"):
            self.advance()
            query.conditions.append(self._condition(entity))
            while self.at_keyword("AND"):
                self.advance()
                query.conditions.append(self._condition(entity))
            if self.at_keyword("OR"):
                raise self.fail(self.peek(), '"AND", "ORDERBY", "STARTPOSITION", '
                                              '"MAXRESULTS" or <EOF>')

        if self.at_keyword("ORDERBY", "ORDER"):
            keyword = self.advance()
            if keyword.upper == "ORDER":
                self.expect_keyword("BY")
            prop_token = self.advance()
            prop = self._property(entity, prop_token)
            if not prop.sortable:
                raise validation_error(f"property '{prop_token.text}' is not sortable")
            query.order_by = prop
            if self.at_keyword("ASC", "DESC"):
                query.descending = self.advance().upper == "DESC"

        if self.at_keyword("STARTPOSITION"):
            self.advance()
            query.start_position = self._integer("STARTPOSITION")
            if query.start_position < 1:
                raise validation_error(
                    f"value {query.start_position} for STARTPOSITION must be 1 or more"
                )
            limit = self.max_start_position
            if limit is not None and query.start_position > limit:
                raise validation_error(
                    f"value {query.start_position} for STARTPOSITION is too large. "
                    f"Max allowed value is {limit}"
                )

        if self.at_keyword("MAXRESULTS"):
            self.advance()
            query.max_results = self._integer("MAXRESULTS")
            if query.max_results > MAX_RESULTS_LIMIT:
                raise validation_error(
                    f"value {query.max_results} is too large. "
                    f"Max allowed value is {MAX_RESULTS_LIMIT}"
                )
            if query.max_results < 1:
                raise validation_error(
                    f"value {query.max_results} for MAXRESULTS must be 1 or more"
                )

        token = self.peek()
        if token is not None:
            raise self.fail(token, "<EOF>")
        return query

    def _entity(self, token: Token) -> str:
        if token.text in PROPERTIES:
            return token.text
        for name in PROPERTIES:
            if name.lower() == token.text.lower():
                # Entity names are case sensitive in Intuit's reference.
                raise validation_error(
                    f"Entity names are case sensitive: use {name}, not {token.text}"
                )
        raise validation_error(f"Invalid context declaration : {token.text}")

    def _property(self, entity: str, token: Token) -> Property:
        if token.kind != "word":
            raise self.fail(token, "<IDENTIFIER>")
        prop = PROPERTIES[entity].get(token.text.lower())
        if prop is None:
            raise validation_error(f"property '{token.text}' is not queryable")
        return prop

    def _integer(self, keyword: str) -> int:
        token = self.advance()
        if token.kind != "number" or "." in token.text:
            raise self.fail(token, f"<INTEGER> after {keyword}")
        return int(token.text)

    def _condition(self, entity: str) -> Condition:
        prop_token = self.advance()
        prop = self._property(entity, prop_token)
        operator_token = self.advance()
        if operator_token.kind == "op":
            operator = operator_token.text
            if operator in {"!=", "<>"}:
                raise self.fail(operator_token, '"=", "<", ">", "<=", ">=", "IN" or "LIKE"')
        elif operator_token.kind == "word" and operator_token.upper in {"IN", "LIKE"}:
            operator = operator_token.upper
        else:
            raise self.fail(operator_token, '"=", "<", ">", "<=", ">=", "IN" or "LIKE"')
        if operator not in prop.operators:
            raise validation_error(
                f"operator {operator} is not supported for property '{prop.name}'"
            )

        if operator == "IN":
            self.expect_punct("(")
            values = [self._value(prop)]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.advance()
                values.append(self._value(prop))
            self.expect_punct(")")
        else:
            values = [self._value(prop)]
        return Condition(prop, operator, values)

    def _value(self, prop: Property) -> Any:
        token = self.advance()
        if token.kind == "string":
            text = token.text[1:-1].replace("\\'", "'").replace("\\\\", "\\")
            if prop.kind == "datetime":
                try:
                    return self.company.clock.parse_literal(text)
                except ValueError:
                    raise validation_error(
                        f"invalid datetime '{text}' for property '{prop.name}'"
                    ) from None
            if prop.kind == "date":
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                    raise validation_error(f"invalid date '{text}' for '{prop.name}'")
                return text
            if prop.kind in {"number", "bool"}:
                raise validation_error(
                    f"property '{prop.name}' needs an unquoted "
                    f"{'number' if prop.kind == 'number' else 'true or false'}"
                )
            return text
        if token.kind == "number":
            if prop.kind == "number":
                return float(token.text)
            raise validation_error(
                f"property '{prop.name}' needs a quoted value, not {token.text}"
            )
        if token.kind == "word" and token.upper in {"TRUE", "FALSE"}:
            if prop.kind != "bool":
                raise validation_error(
                    f"property '{prop.name}' does not take {token.text.lower()}"
                )
            return token.upper == "TRUE"
        raise self.fail(token, "<STRING>, <NUMBER>, true or false")


def parse_query(text: str, company: Company,
                max_start_position: int | None = None) -> Query:
    """Parse and validate a query against the company's entities.

    Raises:
        QueryError: 4000 for a syntax error, 4001 for a validation error.
    """
    if not text or not text.strip():
        raise parser_error('Encountered "<EOF>" at line 1, column 1. '
                           'Was expecting: "SELECT"')
    return _Parser(text, company, max_start_position).parse()


# ---------------------------------------------------------------- executor
def _column_mask(values: np.ndarray, condition: Condition) -> np.ndarray:
    operator = condition.operator
    if condition.prop.kind == "id":
        numbers = [int(v) for v in condition.values if str(v).isdigit()]
        if not numbers:
            return np.zeros(values.shape, dtype=bool)
        return np.isin(values, np.array(numbers, dtype=np.int64))
    if operator == "IN":
        return np.isin(values, np.array(condition.values))
    value = condition.values[0]
    if operator == "=":
        return values == value
    if operator == "<":
        return values < value
    if operator == ">":
        return values > value
    if operator == "<=":
        return values <= value
    return values >= value


def record_value(record: dict[str, Any], prop: Property) -> Any:
    """Return a record's value of a non-column property, or None."""
    value = record.get(prop.name)
    if prop.kind == "ref" and isinstance(value, dict):
        return value.get("value")
    if prop.kind == "number" and value is not None:
        return float(value)
    return value


def _like(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in pattern.split("%")]
    return re.compile(".*".join(parts), re.DOTALL)


def _matches(value: Any, condition: Condition) -> bool:
    if value is None:
        return False
    operator = condition.operator
    if operator == "IN":
        return value in condition.values
    if operator == "LIKE":
        return _like(condition.values[0]).fullmatch(str(value)) is not None
    target = condition.values[0]
    try:
        if operator == "=":
            return bool(value == target)
        if operator == "<":
            return bool(value < target)
        if operator == ">":
            return bool(value > target)
        if operator == "<=":
            return bool(value <= target)
        return bool(value >= target)
    except TypeError:
        return False


@dataclass
class QueryResult:
    """Rows of a page (row numbers) and the number of matching rows."""

    rows: list[int]
    total: int


def execute(query: Query, company: Company) -> QueryResult:
    """Select the rows a query matches, in QBO's order, and cut the page.

    Rows without ORDERBY come in a stable storage order that is not Id order;
    ties of an ORDERBY come in the same storage order.
    """
    table = company.table(query.entity)
    mask = ~table.deleted
    filters_active = any(c.prop.name == "Active" for c in query.conditions)
    if query.entity in {"Customer", "Item"} and not filters_active:
        # Name lists hide inactive rows unless the query filters on Active.
        mask &= table.active

    record_conditions: list[Condition] = []
    for condition in query.conditions:
        if condition.prop.column is None:
            record_conditions.append(condition)
        else:
            mask &= _column_mask(getattr(table, condition.prop.column), condition)

    sort_prop = query.order_by
    if sort_prop is not None and sort_prop.column is not None:
        order = table.order_by(sort_prop.column)
    else:
        order = table.order_by("storage")
    selected = order[mask[order]]

    if record_conditions or (sort_prop is not None and sort_prop.column is None):
        rows = [int(row) for row in selected]
        records = company.records(query.entity, rows)
        pairs = [
            (row, record) for row, record in zip(rows, records, strict=True)
            if all(_matches(record_value(record, c.prop), c) for c in record_conditions)
        ]
        if sort_prop is not None and sort_prop.column is None:
            pairs.sort(key=lambda pair: _sort_key(record_value(pair[1], sort_prop)))
        if query.descending:
            pairs.reverse()
        first = query.start_position - 1
        page = [row for row, _ in pairs[first:first + query.max_results]]
        return QueryResult(page, len(pairs))

    if query.descending:
        selected = selected[::-1]
    total = int(selected.shape[0])
    first = query.start_position - 1
    page = selected[first:first + query.max_results]
    return QueryResult([int(row) for row in page], total)


def _sort_key(value: Any) -> tuple[int, Any]:
    # Rows without the property sort first, as SQL NULLs do in ascending order.
    if value is None:
        return (0, "")
    return (1, value)
