"""MkDocs hook: a page's language, and the navigation's titles in that language.

A page whose source is ``NAME.LANG.md``, with ``LANG`` listed in mkdocs.yml's
``extra.page_languages``, is in language ``LANG``; every other page is in the site's language
(``theme.language``). ``docs/overrides/partials/language.html`` reads the result
(``page_language`` in the template context) to serve the page as ``<html lang="LANG">`` with
mkdocs-material's labels in that language.

While a page in ``LANG`` is rendered, the navigation shows the titles of
``extra.nav_translations[LANG]``: its keys are section titles as ``nav`` writes them and pages
as their source files (``training.md``), so that a page's heading can change without losing its
translation (pages in ``LANG`` keep their own). A key that names no section or page of the
navigation, and a section or page left untranslated on a page in ``LANG``, are warnings (errors
under ``mkdocs build --strict``).
"""
import logging

from mkdocs.structure.nav import Section
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.page_languages")

_saved = []  # (item, title before, whether the item had its own title) while a page renders


def page_language(page, config):
    """The language of a page, from its source file's name.

    Args:
        page: the MkDocs page.
        config: the MkDocs configuration (``extra.page_languages``, ``theme.language``).

    Returns:
        ``LANG`` for ``NAME.LANG.md`` with ``LANG`` in ``extra.page_languages``, else the site's
        language.
    """
    parts = page.file.src_uri.split(".")
    if len(parts) > 2 and parts[-2] in (config.extra.get("page_languages") or []):
        return parts[-2]
    return config.theme["language"]


def _items(items):
    for item in items:
        if isinstance(item, (Section, Page)):
            yield item
        if isinstance(item, Section):
            yield from _items(item.children)


def _key(item):
    return item.file.src_uri if isinstance(item, Page) else item.title


def on_config(config):
    """Refuse a translation table for a language no page is written in."""
    languages = config.extra.get("page_languages") or []
    for lang in config.extra.get("nav_translations") or {}:
        if lang not in languages:
            log.warning(f"extra.nav_translations.{lang}: {lang} is not in extra.page_languages")
    return config


def on_nav(nav, config, files):
    """Warn about translation keys that name no section or page of the navigation."""
    keys = {_key(item) for item in _items(nav.items)}
    for lang, table in (config.extra.get("nav_translations") or {}).items():
        for key in table:
            if key not in keys:
                log.warning(f"extra.nav_translations.{lang}: {key!r} is no section title or page "
                            "file of the navigation")
    return nav


def on_page_context(context, page, config, nav):
    """Give the template the page's language; translate the navigation for this page."""
    lang = page_language(page, config)
    context["page_language"] = lang
    if lang == config.theme["language"]:
        return context
    table = (config.extra.get("nav_translations") or {}).get(lang, {})
    for item in _items(nav.items):
        key = _key(item)
        if key in table:
            _saved.append((item, item.title, "title" in vars(item)))
            item.title = table[key]
        elif not (isinstance(item, Page) and page_language(item, config) == lang):
            log.warning(f"{page.file.src_uri}: no {lang} title for {key!r} in the navigation "
                        f"(mkdocs.yml: extra.nav_translations.{lang})")
    return context


def on_post_page(output, page, config):
    """Give the navigation its own titles back once the page is written."""
    while _saved:
        item, title, own = _saved.pop()
        if own:
            item.title = title
        else:  # the title was the page's heading (mkdocs's Page.title); let it be read again
            del vars(item)["title"]
    return output
