"""HTTP routes: parse, call one service, render. No decisions here."""
