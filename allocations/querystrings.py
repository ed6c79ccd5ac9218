"""Query strings for links that keep what a page was asked for but set some of it anew (a pager's page)."""


def query_without(request, *names: str) -> str:
    """The request's query string less the parameters named."""
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()
