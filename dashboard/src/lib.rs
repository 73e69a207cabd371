//! Server-rendered dashboard of latentsweep (probe).
use leptos::prelude::*;

pub fn probe(name: &str) -> String {
    let name = name.to_owned();
    let pts = vec![(1.0f32, 2.0f32), (3.0, 4.0)];
    Owner::new().with(|| {
        view! {
            <div class="x" title=name.clone()>{name.clone()}
                <svg viewBox="0 0 10 10" width="100">
                    {pts.iter().map(|(x, y)| view! { <circle cx=*x cy=*y r="1" fill="red"><title>{name.clone()}</title></circle> }).collect_view()}
                    <text x="1" y="2" text-anchor="end">"t"</text>
                </svg>
            </div>
        }
        .to_html()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe() {
        println!("{}", super::probe("<script>alert(1)</script>\"&"));
    }
}
