"""The back office's URLs. Every venue URL checks that the logged-in person manages the venue (404 if not)."""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import path

from backoffice.gates import views as gates
from backoffice.history import views as history
from backoffice.people import views as people
from backoffice.personal import views as personal
from backoffice.tracing import actions as trace_actions
from backoffice.tracing import views as tracing
from backoffice.venues import views as venues


def home(request):
    if not request.user.is_authenticated:
        return redirect("register")
    return redirect("venues" if request.user.managements.exists() else "me")


def admin_login(request):
    """The admin logs in through the phone and code login, like everyone else."""
    return redirect(f"/login/?next={request.GET.get('next', '/admin/')}")


admin.site.login = admin_login  # type: ignore[method-assign]
admin.site.site_header = "qrgate"
admin.site.site_title = "qrgate"

urlpatterns = [
    path("", home, name="home"),
    path("healthz", people.healthz, name="healthz"),
    path("login/", people.login_phone, name="login"),
    path("login/otp/", people.login_code, name="login-otp"),
    path("logout/", people.logout_view, name="logout"),
    path("register/", venues.register, name="register"),
    path("register/otp/", venues.register_otp, name="register-otp"),
    path("register/divisions/", venues.divisions, name="divisions"),
    path("register/done/<str:venue_id>/", venues.register_done, name="register-done"),
    path("venues/", venues.venue_list, name="venues"),
    path("venues/request/", venues.request_access, name="venue-request"),
    path("venues/<str:venue_id>/", venues.venue_detail, name="venue"),
    path("venues/<str:venue_id>/poster.<str:fmt>", venues.poster, name="poster"),
    path("history/", history.history, name="history"),
    path("trace/", tracing.trace_page, name="trace"),
    path("trace/quarantine/", trace_actions.quarantine, name="trace-quarantine"),
    path("trace/reveal/", trace_actions.reveal, name="trace-reveal"),
    path("gates/", gates.gate_list, name="gates"),
    path("gates/<str:venue_id>/", gates.venue_gates, name="venue-gates"),
    path("gates/<str:venue_id>/add/", gates.add_gate, name="gate-add"),
    path("gates/<str:venue_id>/lists/", gates.venue_lists, name="venue-lists"),
    path("gates/<str:venue_id>/<str:device_id>/command/", gates.command, name="gate-command"),
    path("me/", personal.my_pass, name="me"),
    path("me/login/", personal.login_phone, name="me-login"),
    path("me/login/otp/", personal.login_code, name="me-login-otp"),
    path("me/pass/replace/", personal.replace, name="me-pass-replace"),
    path("me/pass/<str:token_id>.<str:fmt>", personal.pass_file, name="me-pass-file"),
    path("me/declare/", personal.declare, name="me-declare"),
    path("me/declarations/<int:declaration_id>/", personal.declaration, name="me-declaration"),
    path("me/visits/", personal.visits, name="me-visits"),
    path("v/<str:venue_id>", personal.venue_page, name="venue-public"),
    path("v/<str:venue_id>/checkin/", personal.check_in, name="venue-checkin"),
    path("admin/", admin.site.urls),
]
